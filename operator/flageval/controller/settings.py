"""Operator settings, from FLAGEVAL_* environment variables (the chart sets them from its values)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flageval.api.urlpolicy import UrlPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLAGEVAL_", extra="ignore")

    runner_image: str = Field(default="ghcr.io/flageval/flageval-runner:0.1.0", description="Image of the runner Jobs.")
    image_pull_policy: str = "IfNotPresent"
    runner_service_account: str = Field(default="flageval-runner", description="ServiceAccount the runner pods use in each namespace.")
    manage_runner_rbac: bool = Field(default=True, description="Create the runner ServiceAccount, its Role (task results only) and their RoleBinding in a namespace on first use.")

    results_claim: str = Field(default="flageval-results", description="PVC (in the Evaluation's namespace) holding results, journals and the response cache.")
    volume_mount_path: str = "/var/lib/flageval"
    data_dir: str | None = Field(default=None, description="Benchmark files inside the runner; unset: the runner's default.")

    vendor_label: str = "flageval.io/chip-vendor"
    region_label: str = "flageval.io/region"
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Added to every runner pod (JSON).")
    affinity: dict[str, Any] | None = Field(default=None, description="Affinity of every runner pod (JSON).")
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        description="Resources of the runner container (JSON).",
    )

    backoff_limit: int = Field(default=3, ge=0, description="Retries of a failed runner Job before its dataset is OOR.")
    write_report: bool = Field(default=True, description="When an Evaluation finishes, a Job writes its HTML report (report.html) beside its results.")
    # Unset: 64 and 8, or no cap of the operator's own when Kueue admits the Jobs.
    max_running_jobs: int | None = Field(default=None, ge=1, description="Runner Jobs running at once, cluster-wide.")
    max_running_jobs_per_evaluation: int | None = Field(default=None, ge=1, description="Runner Jobs running at once for one Evaluation.")
    status_interval: float = Field(default=2.0, gt=0, description="At most one status patch per Evaluation this often (seconds).")
    resync_interval: float = Field(default=30.0, gt=0, description="Evaluations are re-examined at least this often (seconds).")
    termination_grace_seconds: int = 30
    runner_metrics_port: int = Field(default=9091, ge=0, le=65535, description="Port of each runner's /metrics (0: none).")
    url_allow: str = Field(default="", description="CIDRs and hosts evalUrls may reach though refused by default (link-local, metadata), comma-separated; passed on to the runners.")
    url_deny: str = Field(default="", description="CIDRs and hosts evalUrls may not reach (e.g. 127.0.0.0/8,::1), comma-separated; wins over url_allow; passed on to the runners.")

    @field_validator("url_allow", "url_deny")
    @classmethod
    def _url_entries(cls, value: str) -> str:
        UrlPolicy.parse(value)  # raises ValueError naming the bad entry, at start
        return value

    @property
    def url_policy(self) -> UrlPolicy:
        return UrlPolicy.parse(self.url_allow, self.url_deny)

    kueue_enabled: bool = Field(default=False, description="Runner Jobs queue in a Kueue LocalQueue and run once Kueue admits them.")
    kueue_queue_name: str = Field(default="flageval", min_length=1, max_length=63,
                                  description="The LocalQueue (in each Evaluation's namespace) unless the Evaluation names one.")

    @field_validator("max_running_jobs", "max_running_jobs_per_evaluation", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def running_cap(self) -> float:
        """Runner Jobs running at once, cluster-wide (inf: no cap)."""
        return _cap(self.max_running_jobs, 64, self.kueue_enabled)

    @property
    def running_cap_per_evaluation(self) -> float:
        return _cap(self.max_running_jobs_per_evaluation, 8, self.kueue_enabled)


def _cap(value: int | None, default: int, kueue: bool) -> float:
    # Kueue's quotas decide what runs; the operator's caps would only second-guess them.
    if value is not None:
        return value
    return float("inf") if kueue else default
