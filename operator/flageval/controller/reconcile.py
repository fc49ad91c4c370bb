"""One Evaluation looked at: what the operator keeps about it between looks (EvaluationState) and what to
do next (Actions), from its body, its Jobs and its runners' task results. No I/O: loop.py carries the
actions out, and tests call these functions directly."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from flageval.api.evaluation import EvaluationSpec, EvaluationTaskResult, Phase
from flageval.api.urlpolicy import UrlPolicy, UrlRefused
from flageval.controller.jobs import LABEL_DATASET, LABEL_EVAL_MODEL, build_jobs
from flageval.controller.settings import Settings
from flageval.controller.status import (
    JobState,
    evaluation_status,
    same_status,
    status_body,
)
from flageval.datasets import DatasetError

Key = tuple[str, str]  # (namespace, evaluation)
Task = tuple[str, str]  # (evalModel, dataset)


@dataclass
class EvaluationState:
    """What the operator keeps about one Evaluation between looks; forgotten with the Evaluation."""

    body: dict[str, Any]  # as last seen: from the watch, or the answer to our own status patch
    # The spec and Job manifests, built once per (uid, generation): they depend on nothing else that changes.
    manifests: tuple[tuple[str | None, int | None], EvaluationSpec, list[dict[str, Any]]] | None = None
    # Jobs created, or being created, that the watch has not shown yet: they hold their slots meanwhile.
    unseen_jobs: dict[str, JobState] = field(default_factory=dict)
    creating: set[str] = field(default_factory=set)  # Jobs whose create call is under way
    suspending: dict[str, bool] = field(default_factory=dict)  # spec.suspend sent to a Job, until the watch shows it
    # Why a Job could not be created, until it is: (kind of refusal, the server's words).
    create_errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    unstarted: dict[str, float] = field(default_factory=dict)  # active Jobs whose runner has not reported → since when
    waiting: dict[Task, str] = field(default_factory=dict)  # datasets without a Job, and why
    last_patch: float = float("-inf")
    # The status last written: the operator is its only writer, so a status equal to it needs no patch
    # even while the watch still shows an older one.
    written: dict[str, Any] | None = None
    patching: bool = False
    look_after_patch: bool = False  # looked at while its patch was under way: look again once it is done
    wants_others_baseline: bool = False  # its last status looked for a baseline in other Evaluations
    held_since: float | None = None  # since when its status patch waits for Job creations (monotonic)
    look_again_at: float | None = None  # when a throttled or retried Evaluation is due again (monotonic)

    @property
    def key(self) -> Key:
        meta = self.body["metadata"]
        return meta["namespace"], meta["name"]

    def look_again(self, at: float) -> None:
        """Be looked at again no later than `at` (time.monotonic())."""
        self.look_again_at = at if self.look_again_at is None else min(self.look_again_at, at)


@dataclass
class Actions:
    """What one look at an Evaluation decided."""

    suspend: dict[str, bool] = field(default_factory=dict)  # Job → spec.suspend to set
    activate: dict[str, bool] = field(default_factory=dict)  # queued Job → its Kueue Workload's spec.active
    runner_access: bool = False  # the namespace needs the runner's ServiceAccount before Jobs are created
    create: list[dict[str, Any]] = field(default_factory=list)  # manifests to create now, within the caps
    patch_status: bool = False  # the status may be written now
    look_again_at: float | None = None


def spec_and_manifests(state: EvaluationState, settings: Settings) -> tuple[EvaluationSpec, list[dict[str, Any]]]:
    """Raises ValidationError for an invalid spec; an unknown dataset or mode gives no manifests (the status says why)."""
    meta = state.body["metadata"]
    version = (meta.get("uid"), meta.get("generation"))
    if state.manifests is not None and state.manifests[0] == version and version[1] is not None:
        return state.manifests[1], state.manifests[2]
    spec = EvaluationSpec.model_validate(state.body["spec"])
    try:
        manifests = build_jobs(state.body, settings)
    except (DatasetError, ValidationError, UrlRefused):
        manifests = []
    state.manifests = (version, spec, manifests)
    return spec, manifests


def job_view(indexed: Iterable[JobState], state: EvaluationState) -> dict[str, JobState]:
    """The Evaluation's Jobs by name: as the watch shows them, with those it has not shown yet and any
    suspension sent since."""
    jobs = {job.name: job for job in indexed}
    for name in [n for n in state.unseen_jobs if n in jobs and n not in state.creating]:
        del state.unseen_jobs[name]
    for name, job in state.unseen_jobs.items():
        jobs.setdefault(name, job)
    for name, suspend in list(state.suspending.items()):
        job = jobs.get(name)
        if job is None or job.suspended == suspend:
            del state.suspending[name]
        else:
            jobs[name] = replace(job, suspended=suspend)
    return jobs


def reconcile(state: EvaluationState, jobs: Mapping[str, JobState], reported: set[Task], settings: Settings, *,
              count_running: Callable[[], int], now: float) -> Actions:
    """What to do for one Evaluation: Jobs to suspend or resume, Jobs to create within the caps (max running
    Jobs overall and per Evaluation), and whether its status may be written yet (at most once per
    status_interval). `jobs` from job_view; `count_running()`: Jobs holding a slot in every Evaluation
    (counted only when a Job is missing).
    Records in `state` which datasets wait and why, and which runners have not started. Raises
    ValidationError for an invalid spec."""
    spec, manifests = spec_and_manifests(state, settings)
    actions = Actions()
    for name, job in jobs.items():
        if name in state.creating or job.finished:
            continue
        if job.queue:  # Kueue owns its suspend: it is stopped and resumed through its Workload
            actions.activate[name] = not spec.suspend
        elif job.suspended != spec.suspend:
            actions.suspend[name] = spec.suspend

    waiting: dict[Task, str] = {}
    missing = [] if spec.suspend else [m for m in manifests if m["metadata"]["name"] not in jobs]
    if missing:
        actions.runner_access = True
        running_mine, running_all = sum(job.running for job in jobs.values()), count_running()
        for manifest in missing:
            name, labels = manifest["metadata"]["name"], manifest["metadata"]["labels"]
            task = (labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])
            error = state.create_errors.get(name)
            if error:
                waiting[task] = f"Job not created yet: {error[1]}"
            if running_mine >= settings.running_cap_per_evaluation or running_all >= settings.running_cap:
                waiting[task] = (f"waiting for a free slot ({running_mine}/{settings.running_cap_per_evaluation:g} running in this Evaluation, "
                                 f"{running_all}/{settings.running_cap:g} in the cluster)")
                continue
            actions.create.append(manifest)
            running_mine += 1
            running_all += 1
    state.waiting = waiting
    state.unstarted = {name: state.unstarted.get(name, now) for name, job in jobs.items()
                       if name not in state.creating and job.active and job.task not in reported}

    # At most one status patch per status_interval; a throttled Evaluation is looked at again when it is due,
    # one whose patch is under way (or waits for a free slot) once it is done — not polled meanwhile: a
    # thousand Evaluations waiting for eight slots were otherwise each looked at twice a second.
    interval = settings.status_interval
    if state.patching:
        state.look_after_patch = True
    elif now < state.last_patch + interval:
        actions.look_again_at = state.last_patch + interval
    else:
        actions.patch_status = True
    return actions


class ReportsOf(Mapping):
    """The task results of a namespace's Evaluations by (evaluation, evalModel, dataset), read on demand
    from the index of task results: only a baseline in another Evaluation is ever looked up."""

    def __init__(self, reports: Mapping[Key, Iterable[Mapping[str, Any]]], namespace: str):
        self.reports, self.namespace = reports, namespace

    def __getitem__(self, key: tuple[str, str, str]) -> EvaluationTaskResult:
        evaluation, eval_model, dataset = key
        for report in self.reports.get((self.namespace, evaluation), ()):
            labels = report["metadata"].get("labels") or {}
            if labels.get(LABEL_EVAL_MODEL) == eval_model and labels.get(LABEL_DATASET) == dataset:
                return EvaluationTaskResult.model_validate(report)
        raise KeyError(key)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        for (ns, evaluation), reports in list(self.reports.items()):
            if ns == self.namespace:
                for report in reports:
                    labels = report["metadata"].get("labels") or {}
                    yield evaluation, labels.get(LABEL_EVAL_MODEL), labels.get(LABEL_DATASET)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def desired_status(state: EvaluationState, jobs: Mapping[str, JobState], reports: Iterable[Mapping[str, Any]],
                   others: Iterable[Mapping[str, Any]], others_reports: Mapping[tuple[str, str, str], EvaluationTaskResult],
                   notes: Mapping[str, str], now: str, url_policy: UrlPolicy | None = None) -> dict[str, Any] | None:
    """The status the Evaluation should have, or None when it has it already (or was last written so).
    notes: why a Job's runner pod waits, by Job name."""
    body = state.body
    by_task = {job.task: job for job in jobs.values() if job.task is not None}
    validated = {}
    for report in reports:
        labels = report["metadata"].get("labels") or {}
        if LABEL_EVAL_MODEL in labels and LABEL_DATASET in labels:
            validated[(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])] = EvaluationTaskResult.model_validate(report)
    waiting = {**{task: notes[job.name] for task, job in by_task.items() if job.name in notes}, **state.waiting}
    new = status_body(evaluation_status(body, by_task, validated, others, others_reports=others_reports, waiting=waiting,
                                        url_policy=url_policy, now=now))
    if same_status(body.get("status") or {}, new) or same_status(state.written, new):
        return None
    return new


def transition_event(old: str | None, new: str, status: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The Event (reason, message, type) a change of phase is marked with."""
    if old == new:
        return None
    if new == Phase.RUNNING.value:
        return ("Resumed", "Jobs resumed from their journals", "Normal") if old == Phase.SUSPENDED.value else ("Started", "Evaluation started", "Normal")
    if new == Phase.SUSPENDED.value:
        return "Stopped", "Evaluation suspended; runner pods removed", "Normal"
    if new == Phase.SUCCEEDED.value:
        return "Finished", f"Every dataset finished; release={status.get('release')}", "Normal"
    if new == Phase.FAILED.value:
        return "Failed", status.get("message") or "Evaluation failed", "Warning"
    return None
