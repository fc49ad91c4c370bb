"""The operator's one loop: it looks at the Evaluations that need it (reconcile.py decides) and carries
out what was decided — Jobs created 8 at a time beside the loop, status patches paced and sent beside
it, pods looked at for runners that have not started. What it keeps per Evaluation is an
EvaluationState in `evaluations`; the Jobs and task results come from kopf's indices."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from flageval.api.evaluation import Phase
from flageval.controller.jobs import LABEL_DATASET, LABEL_EVAL_MODEL, LABEL_EVALUATION
from flageval.controller.kube import api_status, now_text
from flageval.controller.kueue import Workloads
from flageval.controller.reconcile import (
    EvaluationState,
    Key,
    ReportsOf,
    desired_status,
    job_view,
    reconcile,
    transition_event,
)
from flageval.controller.report_job import build_report_job
from flageval.controller.settings import Settings
from flageval.controller.status import JobState, pod_note

FINISHED_PHASES = (Phase.SUCCEEDED.value, Phase.FAILED.value)
log = logging.getLogger("flageval.operator")

EVALUATIONS = Gauge("flageval_evaluations", "Evaluations by phase", ["phase"])
JOBS_CREATED = Counter("flageval_jobs_created", "Runner Jobs created")
STATUS_PATCHES = Counter("flageval_status_patches", "Evaluation status patches")
RECONCILE_SECONDS = Histogram("flageval_reconcile_seconds", "Time to reconcile one Evaluation")
PATCHES_IN_FLIGHT = 8  # status patches waiting for the API server at once
STATUS_HOLD_FOR_JOBS = 30.0  # the longest a status patch waits for Job creations under way (s)
POD_LOOK_INTERVAL = 5.0  # a runner not started after this long has its namespace's pods looked at, this often (s)
# Once woken, the loop lets the events of this long gather before it looks: a pass walks every Evaluation
# (what is due, runners not started, Jobs running), and a burst of watch events would each start one (s).
GATHER = 0.01


class Api(Protocol):
    """What the loop asks of the API server (kube.KubeApi)."""

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]: ...
    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None: ...
    async def activate_workload(self, namespace: str, name: str, active: bool) -> None: ...
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...
    async def runner_pods(self, namespace: str) -> list[dict[str, Any]]: ...
    async def post_event(self, body: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None: ...
    async def ensure_runner_access(self, namespace: str) -> str | None: ...  # why it cannot be made, or None


class Controller:
    """jobs: JobStates by (namespace, evaluation); reports: task-result bodies likewise (kopf's indices,
    or any mapping of iterables)."""

    def __init__(self, settings: Settings, api: Api, jobs: Mapping[Key, Iterable[JobState]],
                 reports: Mapping[Key, Iterable[Mapping[str, Any]]]) -> None:
        self.settings, self.api, self.jobs, self.reports = settings, api, jobs, reports
        self.url_policy = settings.url_policy  # parsed once
        self.evaluations: dict[Key, EvaluationState] = {}
        self.dirty: set[Key] = set()
        self.wake = asyncio.Event()
        self.patch_slots = asyncio.Semaphore(PATCHES_IN_FLIGHT)
        self.in_flight: set[asyncio.Task] = set()  # Job creations, status patches and pod looks beside the loop
        # Why runner pods wait (unschedulable, a missing Secret…), from a look at the namespace's pods every
        # POD_LOOK_INTERVAL while a runner there is that late.
        self.pod_notes: dict[str, dict[tuple[str, str], str]] = {}  # namespace → (evaluation, Job) → note
        self.pods_looked_at: dict[str, float] = {}
        self.looking_at_pods: set[str] = set()
        self.access_refused: set[str] = set()  # namespaces where the runner's access could not be made
        self.workloads = Workloads()  # with Kueue on: the queued Jobs' Workloads (kueue.register fills it)
        self.task: asyncio.Task | None = None
        self.running_counted: int | None = None  # running_all() of the current pass
        self.waiting: set[Key] = set()  # Evaluations with datasets waiting for a Job (a slot, a retry)
        self.jobs_in_flight = 0  # Job creations under way: status patches wait for them
        self.held: set[Key] = set()  # Evaluations whose status patch waits for those creations
        self.job_states: dict[tuple[str, str], JobState] = {}  # (namespace, Job) → as its last event showed it

    # -- what the watches show -----------------------------------------------------------------------

    def touch(self, *keys: Key) -> None:
        self.dirty.update(keys)
        self.wake.set()

    def evaluation_seen(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        state = self.evaluations.get(key)
        if state is None or state.body["metadata"].get("uid") != body["metadata"].get("uid"):  # new, or new under an old name
            self.evaluations[key] = EvaluationState(body)
            self.touch(key)
            return
        before, state.body = state.body, body
        if before.get("spec") != body.get("spec") or before["metadata"].get("generation") != body["metadata"].get("generation"):
            self.touch(key)

    def evaluation_gone(self, key: Key) -> None:
        self.evaluations.pop(key, None)
        self.dirty.discard(key)
        self.waiting.discard(key)
        self.held.discard(key)

    def job_changed(self, key: Key, name: str, job: JobState | None) -> None:
        """Job `name` of `key` changed, or is gone (None). Most of a Job's events change nothing the operator
        reads (the job controller counting its pods): those wake nobody."""
        job_key = (key[0], name)
        if job is not None and self.job_states.get(job_key) == job:
            return
        if job is None:
            self.job_states.pop(job_key, None)
        else:
            self.job_states[job_key] = job
        if job is None or job.finished:  # a slot may have become free
            self.touch(*(k for k in self.waiting if k in self.evaluations))
        self.touch(key)

    # -- the loop ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.in_flight:  # let the status patches and Job creations under way finish
            await asyncio.wait(self.in_flight, timeout=10)

    async def run(self) -> None:
        last_resync = gauged = time.monotonic()
        while True:
            now = time.monotonic()
            due = [s.look_again_at for s in self.evaluations.values() if s.look_again_at is not None]
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.0, min([1.0, *(at - now for at in due)])))
            except TimeoutError:
                pass
            await asyncio.sleep(GATHER)
            self.wake.clear()
            now = time.monotonic()
            for key, state in self.evaluations.items():
                if state.look_again_at is not None and state.look_again_at <= now:  # throttled status due again
                    state.look_again_at = None
                    self.dirty.add(key)
            if now - last_resync >= self.settings.resync_interval:
                self.dirty.update(self.evaluations)
                last_resync = now
            await self.reconcile_dirty()
            self.look_at_pods_when_due()
            if now - gauged >= 1.0:  # the loop wakes at every report: counting every Evaluation each time is waste
                gauged = now
                self.count_phases()

    def count_phases(self) -> None:
        phases: dict[str, int] = defaultdict(int)
        for state in self.evaluations.values():
            phases[(state.body.get("status") or {}).get("phase") or Phase.PENDING.value] += 1
        for phase in Phase:
            EVALUATIONS.labels(phase.value).set(phases.get(phase.value, 0))

    async def reconcile_dirty(self) -> None:
        self.running_counted = None  # counted at most once per pass: with a thousand Evaluations, once per look was most of the CPU
        for key in sorted(self.dirty):
            self.dirty.discard(key)
            started = time.monotonic()
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s/%s failed; retrying later", *key)
                self.dirty.add(key)
            RECONCILE_SECONDS.observe(time.monotonic() - started)

    def view(self, key: Key) -> dict[str, JobState]:
        return job_view(self.jobs.get(key, ()), self.evaluations[key])

    def running_all(self) -> int:
        """Jobs holding a slot under the caps in every Evaluation: those the watch shows (of Evaluations
        not seen yet too) and those created since; counted once per pass over the dirty Evaluations, plus
        the Jobs this pass created."""
        if self.settings.running_cap == float("inf"):  # no cap (Kueue's quotas decide): nothing to count against
            return 0
        if self.running_counted is None:
            self.running_counted = self.count_running()
        return self.running_counted

    def count_running(self) -> int:
        running = 0
        for key in {*self.jobs, *self.evaluations}:
            jobs = self.view(key) if key in self.evaluations else {j.name: j for j in self.jobs.get(key, ())}
            running += sum(job.running for job in jobs.values())
        return running

    async def reconcile(self, key: Key) -> None:
        state = self.evaluations.get(key)
        if state is None or state.body["metadata"].get("deletionTimestamp"):
            return
        namespace = key[0]
        jobs = self.view(key)
        reported = {(labels.get(LABEL_EVAL_MODEL), labels.get(LABEL_DATASET))
                    for labels in ((r["metadata"].get("labels") or {}) for r in self.reports.get(key, ()))}
        try:
            actions = reconcile(state, jobs, reported, self.settings, count_running=self.running_all, now=time.monotonic())
        except ValidationError as exc:
            log.warning("%s/%s has an invalid spec: %s", *key, exc)
            return
        for name, suspend in actions.suspend.items():
            state.suspending[name] = suspend
            try:
                await self.api.suspend_job(namespace, name, suspend)
            except BaseException:
                state.suspending.pop(name, None)
                raise
        for name, active in actions.activate.items():
            workload = self.workloads.to_activate(namespace, name, active)
            if workload is not None:
                await self.api.activate_workload(namespace, workload, active)
                self.workloads.activated(namespace, name, active)
        if actions.runner_access:
            refused = await self.api.ensure_runner_access(namespace)
            if refused:  # a runner could never report: none starts; tried again at every resync
                for manifest in actions.create:
                    labels = manifest["metadata"]["labels"]
                    state.waiting[(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])] = f"not started: {refused}"
                actions.create = []
                if namespace not in self.access_refused:  # said once per namespace
                    self.access_refused.add(namespace)
                    log.error("%s", refused)
                    await self.api.post_event(state.body, "RunnerAccessDenied", refused, "Warning")
            else:
                self.access_refused.discard(namespace)
        if state.waiting:
            self.waiting.add(key)
        else:
            self.waiting.discard(key)
        present = self.view(key) if actions.suspend or actions.runner_access else jobs
        for manifest in actions.create:
            name = manifest["metadata"]["name"]
            if name in present:  # shown by the watch while the calls above were under way
                continue
            state.unseen_jobs[name] = JobState.of(manifest)
            state.creating.add(name)
            if self.running_counted is not None:
                self.running_counted += 1
            self.jobs_in_flight += 1
            self.beside(self.create_job(state, manifest))
        if actions.look_again_at is not None:
            state.look_again(actions.look_again_at)
        now = time.monotonic()
        if actions.patch_status and self.jobs_in_flight and now - (state.held_since or now) < STATUS_HOLD_FOR_JOBS:
            # Job creations first: the API server serves both, and a status can wait for a burst of them
            # (for a while only: Jobs refused again and again must not keep the status from saying so).
            state.held_since = state.held_since or now
            state.look_again(state.held_since + STATUS_HOLD_FOR_JOBS)
            self.held.add(key)  # looked at again as soon as no creation is under way
        elif actions.patch_status:
            state.held_since = None
            state.look_again_at = None
            state.patching = True
            self.beside(self.patch_status(state))

    def beside(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    # -- Jobs ----------------------------------------------------------------------------------------

    async def create_job(self, state: EvaluationState, manifest: dict[str, Any]) -> None:
        try:
            await self._create_job(state, manifest)
        finally:
            self.jobs_in_flight -= 1
            if not self.jobs_in_flight:  # the statuses held back meanwhile are due
                self.touch(*(k for k in self.held if k in self.evaluations))
                self.held.clear()

    async def _create_job(self, state: EvaluationState, manifest: dict[str, Any]) -> None:
        """Create one Job beside the loop; until the watch shows it, what the server made holds its slot, or
        nothing when creation failed (tried again later)."""
        key, name = state.key, manifest["metadata"]["name"]
        try:
            created = await self.api.create_job(key[0], manifest)
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            state.creating.discard(name)
            state.unseen_jobs.pop(name, None)
            answer = api_status(exc)
            if answer.get("reason") == "AlreadyExists":  # created before a restart; the watch brings it
                state.create_errors.pop(name, None)
                return
            if exc.status == 409:  # a conflict (e.g. on a quota's usage), not a refusal: just try again
                state.look_again(time.monotonic() + 0.5)
                return
            error = (f"HTTP {exc.status} {answer.get('reason') or ''}", f"HTTP {exc.status}: {answer.get('message') or exc.reason}")
        except Exception as exc:  # whatever it is, the Evaluation says so and it is tried again
            log.exception("creating Job %s/%s failed", key[0], name)
            state.creating.discard(name)
            state.unseen_jobs.pop(name, None)
            error = (type(exc).__name__, f"{type(exc).__name__}: {exc}")
        else:
            JOBS_CREATED.inc()
            state.creating.discard(name)
            state.unseen_jobs[name] = JobState.of(created)
            state.create_errors.pop(name, None)
            self.touch(key)  # a suspend asked for meanwhile is applied now
            return
        before = state.create_errors.get(name)
        state.create_errors[name] = error  # before any await: a retry meanwhile must see it
        state.look_again(time.monotonic() + 1.0)
        if before is None or before[0] != error[0]:  # said once per kind of refusal, not at every retry (its figures change)
            log.error("cannot create Job %s/%s: %s; retrying", key[0], name, error[1])
            if self.evaluations.get(key) is state:
                await self.api.post_event(state.body, "JobNotCreated", f"Job {name}: {error[1]}", "Warning")

    # -- runner pods that have not started -----------------------------------------------------------

    def look_at_pods_when_due(self) -> None:
        unstarted = [(key[0], state.unstarted) for key, state in self.evaluations.items() if state.unstarted]
        waiting = {namespace for namespace, _ in unstarted}
        for namespace in list(self.pod_notes):
            if namespace not in waiting:  # every runner there has started: nothing to explain
                del self.pod_notes[namespace]
        now = time.monotonic()
        late = {namespace for namespace, since in unstarted if now - min(since.values()) >= POD_LOOK_INTERVAL}
        for namespace in late:
            if namespace not in self.looking_at_pods and now - self.pods_looked_at.get(namespace, float("-inf")) >= POD_LOOK_INTERVAL:
                self.looking_at_pods.add(namespace)
                self.beside(self.look_at_pods(namespace))

    async def look_at_pods(self, namespace: str) -> None:
        """Note why runner pods in `namespace` have not started; Evaluations whose notes changed are looked at again."""
        try:
            pods = await self.api.runner_pods(namespace)
        except (ApiException, HTTPError, ValueError) as exc:  # the notes explain; without them status says less
            if namespace not in self.pods_looked_at:
                log.warning("cannot list pods in %s to explain runners that have not started: %s", namespace, exc)
            return
        finally:
            self.pods_looked_at[namespace] = time.monotonic()
            self.looking_at_pods.discard(namespace)
        notes: dict[tuple[str, str], str] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
            note = pod_note(pod)
            if job and note:
                notes[(labels[LABEL_EVALUATION], job)] = note
        before = self.pod_notes.get(namespace, {})
        self.pod_notes[namespace] = notes
        changed = {evaluation for (evaluation, _), _note in set(before.items()) ^ set(notes.items())}
        self.touch(*((namespace, evaluation) for evaluation in changed))

    # -- status --------------------------------------------------------------------------------------

    def new_status(self, key: Key) -> dict[str, Any] | None:
        state = self.evaluations.get(key)
        if state is None or state.body["metadata"].get("deletionTimestamp"):
            return None
        namespace, name = key
        notes = {job: note for (evaluation, job), note in self.pod_notes.get(namespace, {}).items() if evaluation == name}
        jobs = self.view(key)
        for job in jobs.values():
            if job.queue and job.suspended and not job.finished:  # waits for Kueue: say why, in its words
                notes.setdefault(job.name, self.workloads.waiting(namespace, job.name, job.queue))
        # Looked at only for a service without a baseline of its own: a list of a thousand bodies made for
        # every status was a quarter of the operator's CPU. Whether they were is kept: only such an Evaluation
        # is looked at again when another one of its namespace succeeds.
        # (desired_status does not await: the Evaluations cannot change while it reads them.)
        def others() -> Iterator[dict[str, Any]]:
            state.wants_others_baseline = True
            yield from (s.body for (ns, n), s in self.evaluations.items() if ns == namespace and n != name)

        state.wants_others_baseline = False
        return desired_status(state, jobs, self.reports.get(key, ()), others(), ReportsOf(self.reports, namespace), notes, now_text(),
                              self.url_policy)

    async def write_report(self, body: dict[str, Any]) -> None:
        """The Job that writes report.html beside the finished Evaluation's results (once: a second is refused)."""
        try:
            await self.api.create_job(body["metadata"]["namespace"], build_report_job(body, self.settings))
        except ApiException as exc:
            if exc.status != 409:
                log.warning("no report Job for %s/%s: HTTP %s %s", body["metadata"]["namespace"], body["metadata"]["name"],
                            exc.status, exc.reason)
        except Exception:
            log.exception("no report Job for %s/%s", body["metadata"]["namespace"], body["metadata"]["name"])

    async def patch_status(self, state: EvaluationState) -> None:
        key = state.key
        namespace, name = key
        try:
            async with self.patch_slots:
                new = self.new_status(key)  # the freshest view once a slot is free
                if new is None or self.evaluations.get(key) is not state:
                    return
                body = state.body
                old = body.get("status") or {}
                try:
                    patched = await self.api.patch_status(namespace, name, new)
                except ApiException as exc:
                    if exc.status == 404:
                        return
                    raise
            state.last_patch = time.monotonic()
            state.written = new
            STATUS_PATCHES.inc()
            if state.body is body:  # else the watch has shown a newer object meanwhile
                state.body = patched
            transition = transition_event(old.get("phase"), new["phase"], new)
            if transition:
                self.count_phases()  # at once, not at the loop's next second
                await self.api.post_event(patched, *transition)
            if (self.settings.write_report and new["phase"] in FINISHED_PHASES and old.get("phase") not in FINISHED_PHASES
                    and any(d.get("accuracy") is not None for r in new.get("evalResults") or () for d in r.get("details") or ())):
                self.beside(self.write_report(patched))
            if new["phase"] == Phase.SUCCEEDED.value and old.get("phase") != new["phase"]:
                # This may be the baseline another Evaluation in the namespace waits for (not every other
                # Evaluation: a thousand finishing made a million looks).
                self.touch(*(k for k, s in self.evaluations.items() if k[0] == namespace and k != key and s.wants_others_baseline))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("patching the status of %s/%s failed; retrying later", *key)
            state.look_again(time.monotonic() + 1.0)
        finally:
            state.patching = False
            if state.look_after_patch:
                state.look_after_patch = False
                self.touch(key)
