"""kopf handlers: watch Evaluations, their Jobs and their runners' task results. kopf keeps the Jobs and
task results in indices by (namespace, evaluation); the Controller (loop.py), made at startup and reached
through kopf's memo, keeps one EvaluationState per Evaluation and turns what it sees into Jobs,
suspensions and a paced status."""

from __future__ import annotations

from typing import Any

import kopf

from flageval.api.evaluation import GROUP, PLURAL, TASK_RESULT_PLURAL, VERSION
from flageval.controller.jobs import LABEL_EVALUATION
from flageval.controller.kube import KubeApi
from flageval.controller.loop import Controller
from flageval.controller.settings import Settings
from flageval.controller.status import JobState

OF_AN_EVALUATION = {LABEL_EVALUATION: kopf.PRESENT}


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here reacts to a change (on.create/update/field): kopf would still deep-copy every watched
    body at every event to diff it with the last handled one (a sixth of the operator's CPU at scale)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass

# The handlers are coroutines: they only move data, so they run on the loop's thread (a sync handler would
# go through a thread pool for each event and race the loop).


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, evaluation_jobs: kopf.Index,
                  evaluation_reports: kopf.Index, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status has one writer and a structural schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flageval.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    ours = Settings()
    # The indices are filled by the watches before any Evaluation is handed over (kopf holds the other
    # handlers back until then), so Jobs that exist already count against the caps from the first look.
    memo.controller = Controller(ours, KubeApi(ours), evaluation_jobs, evaluation_reports)
    memo.controller.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
        controller.api.close()


@kopf.on.probe(id="evaluations")
def probe(memo: kopf.Memo, **_: Any) -> int:
    controller: Controller | None = memo.get("controller")
    return len(controller.evaluations) if controller is not None else 0


def _evaluation_of(namespace: str, labels: dict[str, str]) -> tuple[str, str]:
    return namespace, labels[LABEL_EVALUATION]


@kopf.index("batch", "v1", "jobs", labels=OF_AN_EVALUATION)
async def evaluation_jobs(body: kopf.Body, namespace: str, labels: dict[str, str], **_: Any) -> dict[tuple[str, str], JobState]:
    return {_evaluation_of(namespace, labels): JobState.of(body)}


@kopf.index(GROUP, VERSION, TASK_RESULT_PLURAL, labels=OF_AN_EVALUATION)
async def evaluation_reports(body: kopf.Body, namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    key = _evaluation_of(namespace, labels)
    # Runners report every few seconds: this is the only handler their reports go through. kopf stores
    # the value as soon as this returns, before the loop can run.
    memo.controller.touch(key)
    return {key: dict(body)}


@kopf.on.event("batch", "v1", "jobs", labels=OF_AN_EVALUATION)
async def job_event(event: dict[str, Any], name: str, namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    """After the index has the Job, or has dropped it (which kopf does without calling the index function)."""
    job = None if event.get("type") == "DELETED" else JobState.of(event["object"])
    memo.controller.job_changed(_evaluation_of(namespace, labels), name, job)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def evaluation_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    body = event["object"]
    if event.get("type") == "DELETED":  # every field the operator kept about it goes with its state
        memo.controller.evaluation_gone((body["metadata"]["namespace"], body["metadata"]["name"]))
    else:
        memo.controller.evaluation_seen(body)
