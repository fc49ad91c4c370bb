"""Evaluation status from the state of its Jobs and its runners' reports. Pure functions."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from flageval.api import DatasetResult, Status
from flageval.api.evaluation import (
    Condition,
    DatasetDetail,
    Disagreement,
    EvalResult,
    EvaluationSpec,
    EvaluationStatus,
    EvaluationTaskResult,
    Phase,
)
from flageval.api.results import finished_ratio, overall_status
from flageval.api.urlpolicy import UrlPolicy
from flageval.baseline import Candidate, choose_baseline
from flageval.controller.jobs import (
    LABEL_DATASET,
    LABEL_EVAL_MODEL,
    LABEL_QUEUE,
    datasets_of,
    refused_urls,
)
from flageval.datasets import DatasetError
from flageval.verdict import paired_from_verdicts, release_verdict

Key = tuple[str, str]  # (evalModel, dataset)
RESULT_GRACE_SECONDS = 30.0  # a Complete Job's result not seen after this long was never reported


@dataclass(frozen=True)
class JobState:
    name: str
    suspended: bool = False
    queue: str = ""  # the Kueue LocalQueue, when Kueue decides when it runs
    active: int = 0
    complete: bool = False
    failed: bool = False
    reason: str = ""
    message: str = ""
    task: Key | None = None  # (evalModel, dataset), from the Job's labels
    completed_at: str = ""  # status.completionTime of a Complete Job

    @property
    def finished(self) -> bool:
        return self.complete or self.failed

    @property
    def running(self) -> bool:
        """Holds a slot under the caps: not finished and not suspended."""
        return not self.finished and not self.suspended

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobState:
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed") or {}
        labels = job["metadata"].get("labels") or {}
        return cls(
            name=job["metadata"]["name"],
            suspended=bool((job.get("spec") or {}).get("suspend")),
            queue=(job["metadata"].get("labels") or {}).get(LABEL_QUEUE, ""),
            active=int(status.get("active") or 0),
            complete="Complete" in conditions,
            failed="Failed" in conditions,
            reason=failed.get("reason", ""),
            message=failed.get("message", ""),
            task=(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET]) if LABEL_EVAL_MODEL in labels and LABEL_DATASET in labels else None,
            completed_at=status.get("completionTime") or "",
        )


def _seconds_between(earlier: str, later: str) -> float:
    try:
        return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds()
    except ValueError:
        return float("inf")


def _counts(done: int, total: int) -> dict[str, Any]:
    return {"done": done, "total": total, "progress": f"{done}/{total}"}


def _dataset_detail(dataset: str, job: JobState | None, report: EvaluationTaskResult | None, suspend: bool, waiting: str,
                    now: str) -> DatasetDetail:
    running = _counts(report.progress.done, report.progress.total) if report and report.progress else {}
    outcome = report.result if report else None
    final = _counts(outcome.n_done, outcome.n_samples) if outcome is not None and outcome.n_samples else running
    if job is None:
        return DatasetDetail(dataset=dataset, status=Status.CANCELLED if suspend else Status.PENDING,
                             message="" if suspend else waiting or "waiting for a free slot")
    if job.complete:
        # S only with the runner's own successful result, which carries the accuracy.
        if outcome is not None and outcome.status == Status.SUCCESS and outcome.accuracy is not None:
            return DatasetDetail(dataset=dataset, status=Status.SUCCESS, accuracy=outcome.accuracy, serving=outcome.serving, **final)
        if outcome is None and _seconds_between(job.completed_at, now) < RESULT_GRACE_SECONDS:
            # A runner exits 0 only once its result is accepted; its watch event may trail the Job's.
            return DatasetDetail(dataset=dataset, status=Status.RUNNING, message="Job complete; reading its result", **running)
        said = f"{outcome.status.value} without an accuracy" if outcome is not None else "no result"
        return DatasetDetail(dataset=dataset, status=Status.OUT_OF_RETRIES,
                             message=f"the runner's Job completed but its runner reported {said}", **running)
    if job.failed:
        if outcome is not None and outcome.status in (Status.FAILURE, Status.OUT_OF_RETRIES):
            return DatasetDetail(dataset=dataset, status=outcome.status, accuracy=outcome.accuracy, message=outcome.message, **final)
        status = Status.FAILURE if job.reason == "PodFailurePolicy" else Status.OUT_OF_RETRIES
        message = f"{job.reason}: {job.message}".strip(": ")
        if outcome is None:  # its pods' log says why: a crash, or a report the API server refused or never took
            message += "; no result was reported (see the runner pod's log)"
        return DatasetDetail(dataset=dataset, status=status, message=message, **running)
    if job.suspended:
        if job.queue and not suspend:  # Kueue has not admitted it (yet, or again after a preemption)
            return DatasetDetail(dataset=dataset, status=Status.PENDING, message=waiting or "waiting for Kueue admission", **running)
        return DatasetDetail(dataset=dataset, status=Status.CANCELLED, **running)
    if report is not None:  # the runner has started
        return DatasetDetail(dataset=dataset, status=Status.RUNNING, **running)
    # Not started: `waiting` says why when that is known (a pod that cannot be scheduled or configured, a
    # Job the server refused).
    if job.active:
        return DatasetDetail(dataset=dataset, status=Status.PENDING, message=waiting or "runner pod starting")
    return DatasetDetail(dataset=dataset, status=Status.PENDING, message=waiting or "waiting for a node")


def pod_note(pod: Mapping[str, Any]) -> str | None:
    """Why a runner pod has not started, as `kubectl describe` shows it; None while it is only starting."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
            return f"runner pod cannot be scheduled: {condition.get('message') or 'no node fits'}"
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
            return f"runner pod waits: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    return None


def results_of(details: Iterable[DatasetDetail]) -> list[DatasetResult]:
    return [DatasetResult(dataset=d.dataset, status=d.status, accuracy=d.accuracy) for d in details]


def _created(body: Mapping[str, Any]) -> float:
    stamp = (body.get("metadata") or {}).get("creationTimestamp") or ""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


# Candidates of an Evaluation as of one resourceVersion: every status of its namespace may look at them,
# and parsing each other Evaluation's spec and status again for every status made the operator's CPU time
# grow with the square of the Evaluations in a namespace.
_CANDIDATES: OrderedDict[tuple[str, str], list[Candidate[list[DatasetResult]]]] = OrderedDict()
_CANDIDATES_KEPT = 8192


def _candidates(other: Mapping[str, Any]) -> list[Candidate[list[DatasetResult]]]:
    """Another Evaluation's services as baseline candidates, their results as its status holds them."""
    meta = other.get("metadata") or {}
    version = (meta.get("uid"), meta.get("resourceVersion"))
    if None in version:
        return _parse_candidates(other)
    found = _CANDIDATES.get(version)
    if found is None:
        found = _CANDIDATES[version] = _parse_candidates(other)
        if len(_CANDIDATES) > _CANDIDATES_KEPT:
            _CANDIDATES.popitem(last=False)
    return found


class _OnDemand(Sequence):
    """A sequence built on first use: most services have their baseline in their own Evaluation, and then
    the other Evaluations are never looked at."""

    def __init__(self, make: Callable[[], list]) -> None:
        self._make, self._items = make, None

    def _all(self) -> list:
        if self._items is None:
            self._items = self._make()
        return self._items

    def __getitem__(self, index):
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())


def _parse_candidates(other: Mapping[str, Any]) -> list[Candidate[list[DatasetResult]]]:
    try:
        infos = EvaluationSpec.model_validate(other.get("spec") or {}).eval_infos
        status = EvaluationStatus.model_validate(other.get("status") or {})
    except ValidationError:
        return []
    name, created = other["metadata"]["name"], _created(other)
    results = {r.eval_model: r for r in status.eval_results}
    out = []
    for info in infos:
        entry = results.get(info.eval_model)
        out.append(Candidate(name, info.eval_model, info.baseline_key, created=created,
                             succeeded=entry is not None and bool(entry.details) and entry.status == Status.SUCCESS,
                             ref=results_of(entry.details) if entry is not None else []))
    return out


def _verdicts(report: EvaluationTaskResult | None) -> str | None:
    return report.result.sample_verdicts if report is not None and report.result is not None else None


def _conditions(phase: Phase, message: str, previous: list[Mapping[str, Any]], now: str, generation: int | None,
                failed_reason: str = "DatasetsFailed") -> list[Condition]:
    wanted = {
        "Progressing": (phase in (Phase.PENDING, Phase.RUNNING), phase.value),
        "Suspended": (phase == Phase.SUSPENDED, "SuspendRequested" if phase == Phase.SUSPENDED else "NotSuspended"),
        "Complete": (phase == Phase.SUCCEEDED, "AllDatasetsSucceeded" if phase == Phase.SUCCEEDED else "NotComplete"),
        "Failed": (phase == Phase.FAILED, failed_reason if phase == Phase.FAILED else "NoFailure"),
    }
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, (true, reason) in wanted.items():
        status = "True" if true else "False"
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
        out.append(Condition(type=kind, status=status, reason=reason, message=message if true else "",
                             last_transition_time=since, observed_generation=generation))
    return out


def evaluation_status(
    evaluation: Mapping[str, Any],
    jobs: Mapping[Key, JobState],
    reports: Mapping[Key, EvaluationTaskResult],
    others: Iterable[Mapping[str, Any]] = (),
    *,
    others_reports: Mapping[tuple[str, str, str], EvaluationTaskResult] | None = None,
    waiting: Mapping[Key, str] | None = None,
    url_policy: UrlPolicy | None = None,
    now: str,
) -> EvaluationStatus:
    """The status an Evaluation should have: per service and dataset, phase, conditions, verdicts.

    others_reports, keyed (Evaluation name, evalModel, dataset): reports of other Evaluations' runs, so a
    baseline there can be paired sample by sample (pValue, diffCI) while its Jobs still exist."""
    meta = evaluation.get("metadata") or {}
    generation = meta.get("generation")
    previous = (evaluation.get("status") or {}).get("conditions") or []
    spec = EvaluationSpec.model_validate(evaluation["spec"])
    reason = "EvalUrlRefused"
    try:
        refusal = refused_urls(spec, url_policy) if url_policy is not None else None
        datasets = datasets_of(spec)
    except DatasetError as exc:
        refusal, reason = str(exc), "DatasetsFailed"
    if refusal:  # no Job was created: the Evaluation fails as a whole, saying which field and rule
        message = refusal
        return EvaluationStatus(phase=Phase.FAILED, observed_generation=generation, message=message, release=False,
                                conditions=_conditions(Phase.FAILED, message, previous, now, generation, reason),
                                eval_results=[EvalResult(eval_model=i.eval_model, chip=i.chip, status=Status.FAILURE) for i in spec.eval_infos])
    waiting = waiting or {}
    own = {
        info.eval_model: [
            _dataset_detail(ds, jobs.get((info.eval_model, ds)), reports.get((info.eval_model, ds)), spec.suspend,
                            waiting.get((info.eval_model, ds), ""), now)
            for ds in datasets
        ]
        for info in spec.eval_infos
    }
    name = meta.get("name", "")
    mine = [Candidate(name, info.eval_model, info.baseline_key, ref=results_of(own[info.eval_model])) for info in spec.eval_infos]
    theirs = _OnDemand(lambda: [c for other in others for c in _candidates(other)])
    eval_results = []
    for info, candidate in zip(spec.eval_infos, mine):
        details = own[info.eval_model]
        note = ""
        found = choose_baseline(candidate, mine, theirs, named=spec.baseline)
        if found is None:
            note = f"no baseline for {info.baseline_key}"
            verdicts, release = release_verdict(results_of(details), [], tolerance=spec.tolerance)
        elif found is candidate:
            found = None
            verdicts, release = release_verdict(results_of(details), None, tolerance=spec.tolerance)
        else:
            verdicts, release = release_verdict(results_of(details), found.ref, tolerance=spec.tolerance)
        for detail, verdict in zip(details, verdicts):
            detail.base_accuracy, detail.diff = verdict.base_accuracy, verdict.diff
            if note and detail.status == Status.SUCCESS and not detail.message:
                detail.message = note
            if found is not None and verdict.diff is not None:
                base_verdicts = _verdicts(reports.get((found.eval_model, detail.dataset)) if found.evaluation == name
                                          else (others_reports or {}).get((found.evaluation, found.eval_model, detail.dataset)))
                own_verdicts = _verdicts(reports.get((info.eval_model, detail.dataset)))
                paired = paired_from_verdicts(base_verdicts, own_verdicts) if base_verdicts and own_verdicts else None
                if paired is not None:
                    detail.p_value, detail.diff_ci = round(paired.p_value, 4), [paired.ci_low, paired.ci_high]
                    detail.disagreement = Disagreement(both_right=paired.both_right, right_to_wrong=paired.only_a,
                                                       wrong_to_right=paired.only_b, both_wrong=paired.both_wrong)
        status = overall_status([d.status for d in details])
        running = next((d for d in details if d.status == Status.RUNNING), None)
        eval_results.append(EvalResult(
            eval_model=info.eval_model, chip=info.chip, status=status,
            datasets_progress=finished_ratio(d.status for d in details),
            running_dataset=running.dataset if running else "", running_progress=running.progress if running else "",
            release=release, details=details,
        ))

    statuses = [r.status for r in eval_results]
    everything = [d for r in eval_results for d in r.details]
    finished = all(s.finished for s in statuses)
    if finished:
        phase = Phase.FAILED if any(s in (Status.FAILURE, Status.OUT_OF_RETRIES) for s in statuses) else Phase.SUCCEEDED
    elif spec.suspend:
        phase = Phase.SUSPENDED
    elif any(s == Status.RUNNING for s in statuses):
        phase = Phase.RUNNING
    else:
        phase = Phase.PENDING
    failures = [f"{r.eval_model}/{d.dataset}: {d.status.value}: {d.message}".rstrip(": ")
                for r in eval_results for d in r.details if d.status in (Status.FAILURE, Status.OUT_OF_RETRIES)]
    message = "; ".join(failures)[:1024]
    return EvaluationStatus(
        phase=phase,
        observed_generation=generation,
        conditions=_conditions(phase, message, previous, now, generation),
        progress=finished_ratio(d.status for d in everything),
        release=all(r.release for r in eval_results) if finished else None,
        message=message,
        eval_results=eval_results,
    )


def status_body(status: EvaluationStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True)


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Equal apart from conditions' lastTransitionTime, so an unchanged status is not patched again."""
    def strip(s):
        s = dict(s or {})
        s["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
        return s
    return strip(a) == strip(b)
