"""What /evaldiffs and /evaluation_diffs answer, from the backends' views. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

from flageval.api import DatasetResult, Status
from flageval.api.rest import (
    DatasetDiff,
    DiffDetail,
    DiffEntry,
    EvalResultEntry,
    ServingDetail,
)
from flageval.api.results import finished_ratio
from flageval.backends.base import DatasetView, EvaluationView, ServiceView
from flageval.baseline import Candidate, choose_baseline
from flageval.verdict import paired_from_verdicts, release_verdict


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
            details=[DatasetDiff(dataset=d.dataset, status=d.status, accuracy=d.accuracy, diff=d.diff, serving=ServingDetail.of(d.serving))
                     for d in s.datasets],
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
        base_service = services[(base.evaluation, base.eval_model)]
        reference = None if base is candidate else results_of(base_service)
        comparisons, release = release_verdict(results_of(service), reference, tolerance=tolerance)
        # The status's own pairing is against this same baseline when it is the evaluation's own service of the
        # same key (the first rule of choose_baseline).
        own_pairing = base.evaluation == candidate.evaluation and base.key == candidate.key
        base_datasets = {d.dataset: d for d in base_service.datasets}
        details = []
        for c, mine in zip(comparisons, service.datasets):
            detail = DiffDetail(dataset=c.dataset, base_acc=c.base_accuracy, accuracy=c.accuracy, diff=c.diff,
                                serving=ServingDetail.of(mine.serving))
            if base is not candidate:
                _pair(detail, mine, base_datasets.get(c.dataset), own_pairing)
            details.append(detail)
        entries.append(DiffEntry(
            request_id=candidate.evaluation, eval_model=service.eval_model, baseline=f"{base.evaluation}/{base.eval_model}",
            release=release, details=details,
        ))
    return entries


def _pair(detail: DiffDetail, mine: DatasetView, base: DatasetView | None, own_pairing: bool) -> None:
    """The 2×2 counts and p-value against the baseline: from both runs' verdicts when the backend holds them,
    else the ones the evaluation's status computed against the same baseline."""
    if base is not None and mine.verdicts and base.verdicts:
        paired = paired_from_verdicts(base.verdicts, mine.verdicts)
        if paired is not None:
            detail.p_value = round(paired.p_value, 4)
            detail.both_right, detail.right_to_wrong = paired.both_right, paired.only_a
            detail.wrong_to_right, detail.both_wrong = paired.only_b, paired.both_wrong
        return
    if own_pairing and mine.disagreement is not None:
        detail.p_value = mine.p_value
        d = mine.disagreement
        detail.both_right, detail.right_to_wrong, detail.wrong_to_right, detail.both_wrong = (
            d.both_right, d.right_to_wrong, d.wrong_to_right, d.both_wrong)
