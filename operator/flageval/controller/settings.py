"""Operator settings, from FLAGEVAL_* environment variables (the chart sets them from its values)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_running_jobs: int = Field(default=64, ge=1, description="Runner Jobs running at once, cluster-wide.")
    max_running_jobs_per_evaluation: int = Field(default=8, ge=1, description="Runner Jobs running at once for one Evaluation.")
    status_interval: float = Field(default=2.0, gt=0, description="At most one status patch per Evaluation this often (seconds).")
    resync_interval: float = Field(default=30.0, gt=0, description="Evaluations are re-examined at least this often (seconds).")
    termination_grace_seconds: int = 30
    runner_metrics_port: int = Field(default=9091, ge=0, le=65535, description="Port of each runner's /metrics (0: none).")
