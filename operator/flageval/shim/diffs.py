"""What /evaldiffs and /evaluation_diffs answer, from the backends' views. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

from flageval.api import DatasetResult, Status
from flageval.api.rest import DatasetDiff, DiffDetail, DiffEntry, EvalResultEntry
from flageval.api.results import finished_ratio
from flageval.backends.base import EvaluationView, ServiceView
from flageval.baseline import Candidate, choose_baseline
from flageval.verdict import release_verdict


def results_of(service: ServiceView) -> list[DatasetResult]:
    return [DatasetResult(dataset=d.dataset, status=d.status, accuracy=d.accuracy) for d in service.datasets]


def not_ready(view: EvaluationView) -> str:
    """Why an evaluation's diffs are not final yet."""
    what = "stopped; resume it to finish" if view.status == Status.CANCELLED else f"not finished ({view.status.value})"
    return f"results not ready: evaluation {view.request_id} is {what}; datasets {finished_ratio(d.status for d in view.datasets)}"


def eval_results(view: EvaluationView) -> dict[str, list[EvalResultEntry]]:
    """/evaldiffs: each service's datasets with the diffs its backend computed against its baseline."""
    return {
        s.eval_model: [EvalResultEntry(
            status=s.status, release=s.release,
            details=[DatasetDiff(dataset=d.dataset, status=d.status, accuracy=d.accuracy, diff=d.diff) for d in s.datasets],
        )]
        for s in view.services
    }


def compare(views: Sequence[EvaluationView], tolerance: float) -> list[DiffEntry]:
    """/evaluation_diffs: every service of the evaluations, in the order given, against one baseline."""
    compared = [(Candidate(v.request_id, s.eval_model, s.baseline_key), s) for v in views for s in v.services]
    candidates = [c for c, _ in compared]
    services = {(c.evaluation, c.eval_model): s for c, s in compared}
    entries = []
    for candidate, service in compared:
        base = choose_baseline(candidate, candidates, compare_all=True)
        assert base is not None  # compare_all always finds one among a non-empty set
        reference = None if base is candidate else results_of(services[(base.evaluation, base.eval_model)])
        comparisons, release = release_verdict(results_of(service), reference, tolerance=tolerance)
        entries.append(DiffEntry(
            request_id=candidate.evaluation, eval_model=service.eval_model, baseline=f"{base.evaluation}/{base.eval_model}",
            release=release,
            details=[DiffDetail(dataset=c.dataset, base_acc=c.base_accuracy, accuracy=c.accuracy, diff=c.diff) for c in comparisons],
        ))
    return entries
