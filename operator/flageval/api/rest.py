"""Request and response bodies of FlagEval Auto-Evaluation's six endpoints, as the REST shim serves them.

Field names, types and the envelope (`err_code` 0/1 with the message under both names clients read,
`err_msg` and `err_message`) follow FlagEval's documentation; the OpenAPI schema and the docs page are
generated from these classes. Fields marked "extension" are ours: clients that do not send or read them
work unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from flageval.api.evalinfo import EvalInfo
from flageval.api.evaluation import (
    EVAL_MODEL_PATTERN,
    Domain,
    ServingFields,
    ServingSummary,
)
from flageval.api.results import Status

# A request_id is a Kubernetes object name (the Evaluation's) on either backend.
REQUEST_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SUCCESS_MESSAGE = "success"


def _text(value: Any) -> Any:
    """FlagEval clients send user_id and special_event as numbers as often as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_text)]


class Envelope(BaseModel):
    """What every answer carries. err_msg and err_message always hold the same text."""

    err_code: int = Field(default=0, description="0 success, 1 failure (the message says why).", json_schema_extra={"enum": [0, 1]})
    err_msg: str = Field(default=SUCCESS_MESSAGE, description="Outcome message.")
    err_message: str = Field(default=SUCCESS_MESSAGE, description="The same message under the other name in use.")

    @model_validator(mode="before")
    @classmethod
    def _one_message(cls, data: Any) -> Any:
        if isinstance(data, dict):
            message = data.get("err_msg", data.get("err_message"))
            if message is not None:
                data = {**data, "err_msg": message, "err_message": message}
        return data


class ErrorResponse(Envelope):
    """A request that was refused before it reached an endpoint (authentication, size, validation)."""

    err_code: int = Field(default=1, description="Always 1.", json_schema_extra={"enum": [1]})


# --- requests --------------------------------------------------------------------------------------


class RestEvalInfo(EvalInfo):
    """One model service (one chip): FlagEval's eval_info. Unknown fields are ignored, as FlagEval does."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    eval_model: str = Field(
        min_length=1,
        max_length=63,
        pattern=EVAL_MODEL_PATTERN,
        description="Unique run name within the request (letters, digits, '-', '_', '.'); a name ending in '-nvidia-origin' marks an NVIDIA baseline.",
    )
    api_key: str = Field(
        default="EMPTY",
        max_length=4096,
        description="Bearer token for the endpoint. Kept in a Secret (or a 0600 file) and never returned.",
        repr=False,
        json_schema_extra={"writeOnly": True},
    )


class EvaluationRequest(BaseModel):
    """POST /evaluation: start evaluating one or more model services on a domain's benchmarks."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    eval_infos: list[RestEvalInfo] = Field(min_length=1, max_length=32, description="The model services, one per chip.")
    domain: Domain = Field(default=Domain.NLP, description="Benchmark domain: NLP, MM or EV.")
    mode: Text | None = Field(default=None, max_length=63, description="A named suite of datasets within the domain; unset: the domain's default suite.")
    region: Text = Field(default="bj", min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", description="Region whose machines run the evaluation (bj, sz).")
    special_event: Text = Field(default="", max_length=253, description="Free-form tag of the occasion.")
    user_id: Text = Field(default="", max_length=253, description="Who asked for the evaluation.")
    datasets: list[Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]] | None = Field(
        default=None, min_length=1, max_length=64, description="Extension: run exactly these datasets instead of the mode's suite.",
    )
    limit: int | None = Field(default=None, ge=1, le=1_000_000, description="Extension: only the first N samples of each dataset (per subject for MMLU).")

    @model_validator(mode="after")
    def _unique(self) -> EvaluationRequest:
        names = [i.eval_model for i in self.eval_infos]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"eval_model must be unique within eval_infos; repeated: {', '.join(repeated)}")
        if self.datasets is not None and len(set(self.datasets)) != len(self.datasets):
            raise ValueError("datasets must be unique")
        return self


RequestId = Annotated[str, Field(min_length=1, max_length=253, description="What POST /evaluation returned.")]


class RequestIdBody(BaseModel):
    """Names one evaluation: /evaldiffs, /stop_evaluation, /resume_evaluation."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    request_id: RequestId


class ProgressRequest(BaseModel):
    """POST /evaluation_progress."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    request_id: RequestId
    domain: Domain | None = Field(default=None, description="The evaluation's domain; when given it must match.")


class DiffsRequest(BaseModel):
    """POST (or GET) /evaluation_diffs: compare evaluations against one baseline."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    request_ids: list[RequestId] = Field(min_length=1, max_length=64, description="Evaluations to compare; the baseline is the service marked '-nvidia-origin', else the first.")


# --- responses -------------------------------------------------------------------------------------


class EvalTask(BaseModel):
    """One service's task within an evaluation."""

    task_id: str = Field(description="'<request_id>/<eval_model>'.")
    eval_model: str
    chip: str = ""
    status: Status = Field(description="P, R, S, F, C or OOR.")


class EvaluationResponse(Envelope):
    request_id: str = Field(default="", description="Names this evaluation in every other call.")
    eval_tasks: list[EvalTask] = Field(default_factory=list, description="Each service's task, in request order.")


class ServingDetail(ServingFields):
    """Extension: how the service answered the dataset's requests (all figures: the run's result.json)."""

    @classmethod
    def of(cls, summary: ServingSummary | None) -> ServingDetail | None:
        return None if summary is None else cls.model_validate(summary.model_dump(by_alias=False))


class DatasetDiff(BaseModel):
    dataset: str
    status: Status
    accuracy: float | None = Field(default=None, description="Percent (0–100); null until the dataset finished.")
    diff: float | None = Field(default=None, description="accuracy − baseline accuracy in points; null without a baseline.")
    serving: ServingDetail | None = Field(default=None, description="Extension: latency, speed, truncation and errors of the run.")


class EvalResultEntry(BaseModel):
    status: Status = Field(description="The service's status over its datasets.")
    details: list[DatasetDiff] = Field(default_factory=list)
    release: bool = Field(default=False, description="Every dataset succeeded within the tolerance of its baseline.")


class EvalDiffsResponse(Envelope):
    eval_results: dict[str, list[EvalResultEntry]] = Field(default_factory=dict, description="eval_model → its results.")


class ProgressEntry(BaseModel):
    """Extension: one service's progress."""

    eval_model: str
    status: Status
    datasets_progress: str
    running_dataset: str = ""
    running_progress: str = ""


class ProgressResponse(Envelope):
    finished: bool = Field(default=False, description="Every dataset of every service has finished (S, F or OOR).")
    status: Status | None = Field(default=None, description="P, R, S, F, C or OOR over the whole evaluation.")
    datasets_progress: str = Field(default="", description="Datasets finished / datasets, e.g. '2/5'.")
    running_dataset: str = Field(default="", description="The dataset being evaluated now.")
    running_progress: str = Field(default="", description="Samples finished / samples of the running dataset, e.g. '812/1319'.")
    eval_tasks: list[ProgressEntry] = Field(default_factory=list, description="Extension: the same per service.")


class DiffDetail(BaseModel):
    dataset: str
    base_acc: float | None = Field(default=None, description="The baseline's accuracy in percent.")
    accuracy: float | None = Field(default=None, description="Percent (0–100).")
    diff: float | None = Field(default=None, description="accuracy − base_acc in points.")
    p_value: float | None = Field(default=None, description="Extension: exact McNemar p-value on the samples both runs scored; null when not paired.")
    both_right: int | None = Field(default=None, description="Extension: paired samples right on the baseline and here.")
    right_to_wrong: int | None = Field(default=None, description="Extension: right on the baseline, wrong here.")
    wrong_to_right: int | None = Field(default=None, description="Extension: wrong on the baseline, right here.")
    both_wrong: int | None = Field(default=None, description="Extension: wrong on both.")
    serving: ServingDetail | None = Field(default=None, description="Extension: latency, speed, truncation and errors of the run.")


class DiffEntry(BaseModel):
    request_id: str
    eval_model: str = Field(default="", description="Extension: the service (an evaluation may hold several).")
    baseline: str = Field(default="", description="Extension: '<request_id>/<eval_model>' of the baseline used.")
    details: list[DiffDetail] = Field(default_factory=list)
    release: bool = False


class EvaluationDiffsResponse(Envelope):
    eval_diffs: list[DiffEntry] = Field(default_factory=list)


class HealthResponse(BaseModel):
    status: str = "ok"
    backend: str = ""
