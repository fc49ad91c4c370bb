"""What the REST layer and the CLI need from wherever evaluations run: a Kubernetes cluster or this machine.

Both backends answer with the same views; the REST layer turns them into FlagEval's response bodies.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flageval.api import Status
from flageval.api.evalinfo import is_baseline_name
from flageval.api.evaluation import Disagreement, ServingSummary
from flageval.api.rest import REQUEST_ID_PATTERN, EvaluationRequest
from flageval.api.results import finished_ratio, overall_status


class BackendError(Exception):
    """A well-formed request that cannot be served (unknown request_id, nothing to resume, …): err_code 1."""


class UnknownRequest(BackendError):
    def __init__(self, request_id: str):
        super().__init__(f"unknown request_id '{request_id}'")
        self.request_id = request_id


@dataclass
class DatasetView:
    dataset: str
    status: Status
    done: int = 0
    total: int = 0
    accuracy: float | None = None
    base_accuracy: float | None = None
    diff: float | None = None
    message: str = ""
    serving: ServingSummary | None = None
    # Paired against the baseline: the run's packed sample verdicts (api.results.pack_verdicts), when the
    # backend holds them; else the counts and p-value its own baseline gave (the Evaluation's status).
    verdicts: str | None = None
    p_value: float | None = None
    disagreement: Disagreement | None = None

    @property
    def progress(self) -> str:
        return f"{self.done}/{self.total}"


@dataclass
class ServiceView:
    eval_model: str
    chip: str
    baseline_key: str
    datasets: list[DatasetView]
    release: bool = False

    @property
    def is_baseline(self) -> bool:
        return is_baseline_name(self.eval_model)

    @property
    def status(self) -> Status:
        return overall_status([d.status for d in self.datasets])

    @property
    def running(self) -> DatasetView | None:
        return next((d for d in self.datasets if d.status == Status.RUNNING), None)

    @property
    def datasets_progress(self) -> str:
        return finished_ratio(d.status for d in self.datasets)


@dataclass
class EvaluationView:
    request_id: str
    domain: str
    services: list[ServiceView]
    suspended: bool = False
    message: str = ""
    created: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def datasets(self) -> list[DatasetView]:
        return [d for s in self.services for d in s.datasets]

    @property
    def status(self) -> Status:
        return overall_status([d.status for d in self.datasets])

    @property
    def finished(self) -> bool:
        return bool(self.datasets) and all(d.status.finished for d in self.datasets)


class Backend(Protocol):
    name: str
    # Where the runners read benchmark files, when this process sees them too (local); the default MM
    # and EV suites then keep the datasets present there. None: the files are elsewhere (in the runner image).
    data_dir: Path | None

    async def start(self, request: EvaluationRequest, datasets: list[str]) -> EvaluationView:
        """Start evaluating; the view's request_id names the evaluation from now on."""

    async def stop(self, request_id: str) -> str:
        """Stop every running dataset (they keep what they finished); returns a message."""

    async def resume(self, request_id: str) -> str:
        """Continue a stopped evaluation from where each dataset stopped; returns a message."""

    async def view(self, request_id: str) -> EvaluationView:
        """Status, progress, accuracies and diffs of one evaluation. Raises UnknownRequest."""

    async def report_dirs(self, request_id: str) -> list[Path]:
        """The results directories of the evaluation's services (for its HTML report), those that exist.
        Raises UnknownRequest, or BackendError when this process cannot read them."""

    async def aclose(self) -> None: ...


def new_request_id() -> str:
    """A DNS label, so that it can name an Evaluation object too."""
    return f"eval-{uuid.uuid4().hex[:12]}"


def valid_request_id(request_id: str) -> bool:
    return bool(re.match(REQUEST_ID_PATTERN, request_id))
