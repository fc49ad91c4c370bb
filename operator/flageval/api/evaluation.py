"""`flageval.io/v1alpha1` kinds: Evaluation (what a user applies) and EvaluationTaskResult (what a runner
reports). The CRDs in crds/ are generated from these types by hack/gen_crds.py."""

from __future__ import annotations

import re
from collections.abc import Iterable
from copy import copy
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from flageval.api.evalinfo import BASELINE_SUFFIX, CHIP_PATTERN, EvalInfo, ServiceNames
from flageval.api.results import (
    DatasetResult,
    Progress,
    SampleRecord,
    ServingFigures,
    Status,
    is_verdict,
    pack_verdicts,
    sample_verdicts,
)
from flageval.api.urlpolicy import METADATA_LITERALS

GROUP = "flageval.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Evaluation"
PLURAL = "evaluations"
TASK_RESULT_KIND = "EvaluationTaskResult"
TASK_RESULT_PLURAL = "evaluationtaskresults"

# A label value: evalModel names Jobs' labels and the results directory.
EVAL_MODEL_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
URL_RULE = "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''"
# The metadata services' literal addresses and names, in any case, with or without the root's trailing
# dot; the operator and the runners refuse the rest (CIDRs, resolved addresses: see api/urlpolicy.py).
# One regular expression: url() per name would cost the API server more than a CRD rule may.
_METADATA_HOST = "|".join(re.escape(f"[{m}]" if ":" in m else m) for m in METADATA_LITERALS)
METADATA_RULE = "!self.matches('" + (r"(?i)^[a-z]+://([^/?#@]*@)?(" + _METADATA_HOST + r")\.?(:[0-9]*)?([/?#].*)?$").replace("\\", "\\\\") + "')"


def cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


def _from_evalinfo(name: str, **overrides: Any) -> Any:
    """The EvalInfo field's default, bounds and description, so the two never disagree."""
    field = copy(EvalInfo.model_fields[name])
    for key, value in overrides.items():
        setattr(field, key, value)
    return field


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Domain(str, Enum):
    NLP = "NLP"
    MM = "MM"
    EV = "EV"


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class SecretKeyRef(CamelModel):
    """Where the endpoint's API key is: a key of a Secret in the Evaluation's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret in the Evaluation's namespace.")
    key: str = Field(default="api_key", min_length=1, max_length=253, description="Key within the Secret whose value is the API key.")


class EvalInfoSpec(ServiceNames, CamelModel):
    """A model service (one chip) to evaluate: FlagEval's eval_info in camelCase, the key by reference."""

    eval_model: str = Field(
        min_length=1, max_length=63, pattern=EVAL_MODEL_PATTERN,
        description=f"Unique run name within the Evaluation (letters, digits, '-', '_', '.'); a name ending in '{BASELINE_SUFFIX}' marks an NVIDIA baseline.",
    )
    model: Annotated[str, _from_evalinfo("model")] = Field(max_length=253)
    eval_url: str = Field(
        max_length=2048,
        description=EvalInfo.model_fields["eval_url"].description,
        json_schema_extra={"x-kubernetes-validations": [
            cel(URL_RULE, "evalUrl must be an http:// or https:// URL such as http://host:9010/v1/chat/completions"),
            cel(METADATA_RULE, "evalUrl must not be a cloud metadata service (169.254.169.254, fd00:ec2::254, metadata.google.internal, …)"),
        ]},
    )
    tokenizer: Annotated[str, _from_evalinfo("tokenizer")] = Field(max_length=253)
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The Secret key holding the endpoint's API key; without it the key is 'EMPTY'. A plain key is never accepted in the spec.",
    )
    batch_size: Annotated[int, _from_evalinfo("batch_size")]
    num_concurrent: Annotated[int, _from_evalinfo("num_concurrent")]
    num_retry: Annotated[int, _from_evalinfo("num_retry")]
    gen_kwargs: Annotated[str, _from_evalinfo("gen_kwargs")] = Field(max_length=1024)
    thinking: Annotated[bool, _from_evalinfo("thinking")]
    retry_time: Annotated[float, _from_evalinfo("retry_time")]
    chip: str = Field(
        default=EvalInfo.model_fields["chip"].default, max_length=63,
        description=EvalInfo.model_fields["chip"].description,
        json_schema_extra={"x-kubernetes-validations": [cel(f"self.matches('{CHIP_PATTERN}')", "chip must be Vendor-ChipName, e.g. Nvidia-H100 or Ascend-910B")]},
    )
    base_model_name: Annotated[str, _from_evalinfo("base_model_name")] = Field(max_length=253)

    def to_eval_info(self, api_key: str = "EMPTY") -> EvalInfo:
        """The runner's EvalInfo; EvalInfo's own validation applies (URL, gen_kwargs, bounds)."""
        fields = self.model_dump(exclude={"api_key_secret_ref"})
        return EvalInfo.model_validate({**fields, "api_key": api_key})


_IMMUTABLE = ("domain", "mode", "datasets", "limit", "region", "queueName", "evalInfos", "taskConfigMaps", "allowCodeExecution")


def _immutable(field: str) -> dict[str, Any]:
    rule = f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    return cel(rule, f"{field} is immutable; only suspend (and baseline, tolerance) may change", fieldPath=f".{field}")


class EvaluationSpec(CamelModel):
    """What to evaluate: model services (one per chip), the benchmark suite, and how to judge the results."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_immutable(f) for f in _IMMUTABLE]},
    )

    domain: Domain = Field(default=Domain.NLP, description="Benchmark domain: NLP (language), MM (multimodal) or EV.")
    mode: str | None = Field(
        default=None, max_length=63,
        description="A named suite of datasets within the domain; unset runs the domain's default suite (NLP: gsm8k and mmlu).",
    )
    datasets: list[Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="Explicit list of datasets to run; overrides mode.",
        json_schema_extra={"x-kubernetes-validations": [cel("self.all(x, self.exists_one(y, y == x))", "datasets must be unique")]},
    )
    limit: int | None = Field(default=None, ge=1, description="Evaluate only the first N samples of each dataset (smoke runs).")
    task_config_maps: list[Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")]] | None = Field(
        default=None, max_length=16,
        description="ConfigMaps in this namespace holding your own lm-evaluation-harness task files (YAML, helper .py, "
                    "small data); each is mounted into the runners as a task folder, and its tasks can be named in datasets.",
    )
    allow_code_execution: bool = Field(
        default=False,
        description="Let code tasks (humaneval) run the model's programs, each in a sandbox; without it such datasets fail.",
    )
    region: str = Field(default="bj", min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
                        description="Region whose nodes run the Jobs (matched against the region node label), e.g. bj or sz.")
    queue_name: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$",
        description="With Kueue: the LocalQueue of this namespace the runner Jobs queue in; unset: the operator's (chart value kueue.queueName).",
    )
    special_event: str = Field(default="", max_length=253, description="Free-form tag of the occasion (FlagEval's special_event).")
    user_id: str = Field(default="", max_length=253, description="Who asked for the evaluation (FlagEval's user_id).")
    suspend: bool = Field(default=False, description="true stops every running dataset (Jobs suspended, pods removed); false resumes from the last finished sample.")
    eval_infos: list[EvalInfoSpec] = Field(
        min_length=1, max_length=32,
        description="The model services to evaluate, one per chip.",
        json_schema_extra={"x-kubernetes-validations": [cel("self.all(x, self.exists_one(y, y.evalModel == x.evalModel))", "evalModel must be unique within evalInfos")]},
    )
    baseline: str | None = Field(
        default=None, max_length=253,
        description="Name of an Evaluation in this namespace whose '-nvidia-origin' results are the baseline; unset: a baseline in this Evaluation, else the newest succeeded baseline Evaluation.",
    )
    tolerance: float = Field(default=0.5, gt=0, le=100, description="Release rule: every dataset succeeded and |accuracy - baseline| < tolerance (points).")


class Condition(CamelModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type: Progressing, Suspended, Complete or Failed.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field(default="", description="One-word CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The spec generation the condition describes.")


class ServingFields(BaseModel):
    """The few serving figures of one run that status and the REST API show; all of them are in its
    result.json on the results volume."""

    latency_p50_ms: float | None = Field(default=None, description="Median latency of the answering attempts, ms.")
    latency_p99_ms: float | None = Field(default=None, description="99th percentile of the same, ms.")
    output_tokens_per_second: float | None = Field(default=None, description="Completion tokens per second of latency; null when the service sent no usage.")
    truncated_percent: float | None = Field(default=None, description="Answers cut by the length limit (finish_reason 'length'), percent.")
    errors: int = Field(default=0, description="Failed attempts, every kind.")
    retries: int = Field(default=0, description="Attempts sent again.")


class ServingSummary(ServingFields):
    """A few serving figures of one run; all of them are in its result.json on the results volume."""

    model_config = CamelModel.model_config

    @classmethod
    def of(cls, figures: ServingFigures | None) -> ServingSummary | None:
        if figures is None:
            return None
        return cls(latency_p50_ms=figures.latency_p50_ms, latency_p99_ms=figures.latency_p99_ms,
                   output_tokens_per_second=figures.output_tokens_per_second, truncated_percent=figures.truncated_percent,
                   errors=sum(figures.errors.values()), retries=sum(figures.retries.values()))


class Disagreement(CamelModel):
    """The 2×2 table of paired samples behind pValue: the baseline's verdict → this service's."""

    both_right: int = Field(default=0, description="Right on the baseline and here.")
    right_to_wrong: int = Field(default=0, description="Right on the baseline, wrong here.")
    wrong_to_right: int = Field(default=0, description="Wrong on the baseline, right here.")
    both_wrong: int = Field(default=0, description="Wrong on both.")


class DatasetDetail(CamelModel):
    """One dataset of one service: status, progress and verdict (full results stay on the results volume)."""

    dataset: str = Field(description="Dataset name.")
    status: Status = Field(description="P pending, R running, S success, F failure, C cancelled (suspended), OOR out of retries.")
    progress: str = Field(default="", description="Samples finished / total, e.g. 812/1319.")
    done: int = Field(default=0, description="Samples finished.")
    total: int = Field(default=0, description="Samples in the run (0 until the runner has counted them).")
    accuracy: float | None = Field(default=None, description="Headline accuracy in percent.")
    base_accuracy: float | None = Field(default=None, description="The baseline's accuracy on this dataset, in percent.")
    diff: float | None = Field(default=None, description="accuracy - baseAccuracy, in points.")
    p_value: float | None = Field(default=None, description="Exact McNemar p-value of the paired difference to the baseline, when computed.")
    diff_ci: list[float] | None = Field(default=None, alias="diffCI", description="95 % bootstrap interval of the diff in points, when computed.")
    disagreement: Disagreement | None = Field(default=None, description="Paired sample counts behind pValue (samples stay on the results volume).")
    serving: ServingSummary | None = Field(default=None, description="Latency, speed, truncation and errors of the run.")
    message: str = Field(default="", description="Why the dataset failed or waits.")


class EvalResult(CamelModel):
    """Summary of one evalInfo (one service)."""

    eval_model: str = Field(description="The evalInfo's evalModel.")
    chip: str = Field(default="", description="The evalInfo's chip.")
    status: Status = Field(description="P, R, S, F, C or OOR over the service's datasets.")
    datasets_progress: str = Field(default="", description="Datasets finished / datasets, e.g. 2/5.")
    running_dataset: str = Field(default="", description="The dataset being evaluated now.")
    running_progress: str = Field(default="", description="Progress of the running dataset, e.g. 812/1319.")
    release: bool = Field(default=False, description="Every dataset succeeded within tolerance of its baseline.")
    details: list[DatasetDetail] = Field(default_factory=list, description="Per dataset, in suite order.")


class EvaluationStatus(CamelModel):
    """Observed state, written by the operator only."""

    phase: Phase = Field(default=Phase.PENDING, description="Pending, Running, Suspended, Succeeded or Failed.")
    observed_generation: int | None = Field(default=None, description="The spec generation this status reflects.")
    conditions: list[Condition] = Field(default_factory=list, description="Progressing, Suspended, Complete and Failed conditions.")
    progress: str = Field(default="", description="Datasets finished / datasets over every service, e.g. 3/4.")
    release: bool | None = Field(default=None, description="Every service released; unset until the evaluation finishes.")
    message: str = Field(default="", description="A summary of why the evaluation failed or waits.")
    eval_results: list[EvalResult] = Field(default_factory=list, description="One entry per evalInfo, in spec order.")


class Evaluation(CamelModel):
    """An evaluation of model services (one per chip) on a domain's benchmarks, against an NVIDIA baseline."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=API_VERSION, description="flageval.io/v1alpha1")
    kind: str = Field(default=KIND, description="Evaluation")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: EvaluationSpec
    status: EvaluationStatus | None = None


# --- the runner → operator channel ------------------------------------------------------------------


class TaskProgress(CamelModel):
    """Latest progress of one (service, dataset) run."""

    dataset: str = Field(description="Dataset name.")
    done: int = Field(default=0, description="Samples finished.")
    total: int = Field(default=0, description="Samples in the run.")
    failed: int = Field(default=0, description="Samples that failed after every retry.")
    rate: float = Field(default=0.0, description="Samples per second over the recent window.")

    @classmethod
    def of(cls, progress: Progress) -> TaskProgress:
        return cls.model_validate(progress.model_dump())

    @property
    def text(self) -> str:
        return f"{self.done}/{self.total}"


class TaskOutcome(CamelModel):
    """The outcome of one (service, dataset) run; the full result stays on the results volume."""

    dataset: str = Field(description="Dataset name.")
    status: Status = Field(description="S, F or OOR.")
    accuracy: float | None = Field(default=None, description="Headline accuracy in percent.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Every reported metric, in percent.")
    n_samples: int = Field(default=0, description="Samples in the run.")
    n_done: int = Field(default=0, description="Samples finished: scored, or failed after every retry.")
    n_failed: int = Field(default=0, description="Samples that failed after every retry.")
    progress: str = Field(default="", description="Samples finished / total.")
    message: str = Field(default="", description="Why the run failed.")
    sample_verdicts: str | None = Field(
        default=None,
        description="Per-sample verdicts in dataset order ('1' right, '0' wrong, '-' unscored), zlib-compressed and base64-encoded; "
        "paired with the baseline's for pValue and diffCI.",
    )
    serving: ServingSummary | None = Field(default=None, description="A few serving figures of the run.")

    @classmethod
    def of(cls, result: DatasetResult, records: Iterable[SampleRecord] = ()) -> TaskOutcome:
        outcome = cls.model_validate(result.model_dump(exclude={"serving"}))
        outcome.serving = ServingSummary.of(result.serving)
        records = list(records)
        # a score on a scale (truthfulqa_mc2) has no right/wrong to pair: no McNemar for it
        if records and all(is_verdict(next(iter(r.scores.values()))) for r in records if r.scores):
            outcome.sample_verdicts = pack_verdicts(sample_verdicts(records, result.n_samples))
        return outcome

    def to_result(self) -> DatasetResult:
        return DatasetResult.model_validate(self.model_dump(exclude={"sample_verdicts", "serving"}))


class EvaluationTaskResult(CamelModel):
    """What one runner Job reports: its progress and, once done, its outcome. Created and patched by the runner."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=API_VERSION, description="flageval.io/v1alpha1")
    kind: str = Field(default=TASK_RESULT_KIND, description="EvaluationTaskResult")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    progress: TaskProgress | None = Field(default=None, description="Latest progress of the run.")
    result: TaskOutcome | None = Field(default=None, description="The outcome, once the run has finished.")
    attempt: str = Field(default="", description="The pod that wrote this report; a new attempt clears an older outcome.")
