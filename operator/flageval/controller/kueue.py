"""Kueue mode: an Evaluation's runner Jobs wait, suspended, in a LocalQueue until Kueue admits them
(quota left in the flavor of their chip vendor and region), then Kueue resumes them.

Kueue owns a queued Job's spec.suspend: the operator stops and resumes such a Job through its
Workload's spec.active instead (Kueue then evicts it, or queues it again). It follows the Workloads
to say why a dataset waits, in Kueue's words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = "workloads"
LOCAL_QUEUES = "localqueues"


@dataclass(frozen=True)
class WorkloadState:
    """What the operator needs of a Workload: the Job it stands for, whether it may run, why it waits."""

    name: str
    job: str
    queue: str
    active: bool = True
    admitted: bool = False
    cluster_queue: str = ""  # once quota is reserved
    reason: str = ""
    message: str = ""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> WorkloadState | None:
        """None for a Workload of anything but a batch/v1 Job."""
        meta = body.get("metadata") or {}
        job = next((o.get("name") for o in meta.get("ownerReferences") or []
                    if o.get("kind") == "Job" and (o.get("apiVersion") or "").startswith("batch/")), None)
        if not job:
            return None
        spec, status = body.get("spec") or {}, body.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}

        def true(kind: str) -> bool:
            return (conditions.get(kind) or {}).get("status") == "True"

        # The newest word on why it does not run: an eviction (deactivated, preempted) or no quota yet.
        why = next((conditions[k] for k in ("Evicted", "QuotaReserved") if k in conditions
                    and conditions[k].get("status") == ("True" if k == "Evicted" else "False")), {})
        return cls(name=meta.get("name", ""), job=job, queue=spec.get("queueName") or "",
                   active=spec.get("active", True) is not False, admitted=true("Admitted"),
                   cluster_queue=(status.get("admission") or {}).get("clusterQueue") or "",
                   reason=why.get("reason") or "", message=why.get("message") or "")


def waiting_message(workload: WorkloadState | None, cluster_queue: str) -> str:
    """Why a queued Job has not started, quoting Kueue: the ClusterQueue, the reason, its message."""
    if workload is None:
        return "queued for Kueue admission (no Workload yet)"
    where = f"ClusterQueue {workload.cluster_queue or cluster_queue}" if workload.cluster_queue or cluster_queue else f"LocalQueue {workload.queue}"
    if workload.admitted:
        return f"admitted by Kueue in {where}; runner pod starting"
    detail = ": ".join(part for part in (workload.reason, workload.message) if part)
    return f"waiting for Kueue admission in {where}" + (f": {detail}" if detail else "")


class Workloads:
    """The Workloads of runner Jobs and the LocalQueues' ClusterQueues, as the watches show them."""

    def __init__(self) -> None:
        self.by_job: dict[tuple[str, str], WorkloadState] = {}  # (namespace, Job) → its Workload
        self.evaluation_of: dict[tuple[str, str], str] = {}  # (namespace, queued Job) → its Evaluation
        self.cluster_queues: dict[tuple[str, str], str] = {}  # (namespace, LocalQueue) → ClusterQueue

    def seen(self, event: Mapping[str, Any]) -> tuple[str, str] | None:
        """Record a Workload watch event; the (namespace, Evaluation) it concerns, if known."""
        body = event["object"]
        state = WorkloadState.of(body)
        if state is None:
            return None
        key = (body["metadata"]["namespace"], state.job)
        if event.get("type") == "DELETED":
            if (current := self.by_job.get(key)) is not None and current.name == state.name:
                del self.by_job[key]
        else:
            self.by_job[key] = state
        evaluation = self.evaluation_of.get(key)
        return (key[0], evaluation) if evaluation else None

    def job_seen(self, event: Mapping[str, Any], evaluation_label: str) -> None:
        meta = event["object"]["metadata"]
        key = (meta["namespace"], meta["name"])
        if event.get("type") == "DELETED":
            self.evaluation_of.pop(key, None)
        elif evaluation := (meta.get("labels") or {}).get(evaluation_label):
            self.evaluation_of[key] = evaluation

    def queue_seen(self, event: Mapping[str, Any]) -> None:
        meta = event["object"]["metadata"]
        key = (meta["namespace"], meta["name"])
        if event.get("type") == "DELETED":
            self.cluster_queues.pop(key, None)
        else:
            self.cluster_queues[key] = (event["object"].get("spec") or {}).get("clusterQueue") or ""

    def waiting(self, namespace: str, job: str, queue: str) -> str:
        return waiting_message(self.by_job.get((namespace, job)), self.cluster_queues.get((namespace, queue), ""))

    def to_activate(self, namespace: str, job: str, active: bool) -> str | None:
        """The Workload to patch for a Job to run (active) or stop; None when it is so already, or has no
        Workload yet (its watch event brings the Job's Evaluation back to be looked at)."""
        workload = self.by_job.get((namespace, job))
        return workload.name if workload is not None and workload.active != active else None

    def activated(self, namespace: str, job: str, active: bool) -> None:
        """Patched: so it stays until the watch shows it."""
        if (workload := self.by_job.get((namespace, job))) is not None:
            self.by_job[(namespace, job)] = replace(workload, active=active)


def register(*, evaluation_label: str, queue_label: str) -> None:
    """Watch Workloads and LocalQueues (only with Kueue on: the operator needs no rights on them otherwise),
    and which Evaluation each queued Job belongs to, into the Controller's Workloads (kopf's memo); an
    Evaluation whose Workload changed is looked at again."""
    import kopf

    @kopf.on.event("batch", "v1", "jobs", labels={evaluation_label: kopf.PRESENT, queue_label: kopf.PRESENT})
    async def queued_job_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        memo.controller.workloads.job_seen(event, evaluation_label)

    @kopf.on.event(GROUP, VERSION, WORKLOADS)
    async def workload_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        key = memo.controller.workloads.seen(event)
        if key is not None:
            memo.controller.touch(key)

    @kopf.on.event(GROUP, VERSION, LOCAL_QUEUES)
    async def local_queue_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        memo.controller.workloads.queue_seen(event)
