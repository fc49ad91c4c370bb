"""kopf handlers: watch Evaluations, their Jobs and their runners' task results; one loop turns what it
sees into Jobs (idempotently, within the caps), Job suspension and a throttled status. The decisions
are made by jobs.py and status.py; this module only moves data between them and the API."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from flageval.api.evaluation import (
    GROUP,
    PLURAL,
    TASK_RESULT_PLURAL,
    VERSION,
    EvaluationSpec,
    EvaluationTaskResult,
    Phase,
)
from flageval.controller.jobs import (
    LABEL_DATASET,
    LABEL_EVAL_MODEL,
    LABEL_EVALUATION,
    build_jobs,
)
from flageval.controller.settings import Settings
from flageval.controller.status import (
    JobState,
    evaluation_status,
    pod_note,
    same_status,
    status_body,
)
from flageval.datasets import DatasetError

log = logging.getLogger("flageval.operator")

EVALUATIONS = Gauge("flageval_evaluations", "Evaluations by phase", ["phase"])
JOBS_CREATED = Counter("flageval_jobs_created", "Runner Jobs created")
STATUS_PATCHES = Counter("flageval_status_patches", "Evaluation status patches")
RECONCILE_SECONDS = Histogram("flageval_reconcile_seconds", "Time to reconcile one Evaluation")
PATCHES_IN_FLIGHT = 8  # status patches sent at once, on their own threads: the loop never waits for one
CREATES_IN_FLIGHT = 8  # Job creations sent at once, likewise
POD_LOOK_INTERVAL = 5.0  # a runner not started after this long has its namespace's pods looked at, this often (s)

Key = tuple[str, str]  # (namespace, evaluation)


class State:
    """What the watches have shown, and which Evaluations need another look."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.evaluations: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.reports: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.dirty: set[Key] = set()
        self.waiting: set[Key] = set()  # Evaluations with Jobs not created because of the caps
        self.last_patch: dict[Key, float] = {}
        # The status last written, per Evaluation: the operator is its only writer, so a status equal to it
        # needs no patch even while the watch still shows an older one.
        self.written: dict[Key, dict[str, Any]] = {}
        self.later: dict[Key, float] = {}  # throttled Evaluations: when their status may be patched again (monotonic)
        self.patching: dict[Key, asyncio.Task] = {}  # status patches in flight
        self.manifests: dict[Key, tuple[tuple[str, int | None], EvaluationSpec, list[dict[str, Any]]]] = {}
        self.patch_slots = asyncio.Semaphore(PATCHES_IN_FLIGHT)
        self.patch_pool: ThreadPoolExecutor | None = None
        # Jobs decided on and being created: their manifests stand in STATE.jobs (and count against the
        # caps) until the API server has answered.
        self.creating: dict[tuple[Key, str], asyncio.Task] = {}
        # Why a Job could not be created, until it is: (kind of refusal, the server's words).
        self.create_errors: dict[tuple[Key, str], tuple[str, str]] = {}
        self.create_pool: ThreadPoolExecutor | None = None
        # Runners that have not started: why their pods wait (unschedulable, a missing Secret…), from a
        # look at the namespace's pods every POD_LOOK_INTERVAL while a runner there is that late.
        self.unstarted: dict[Key, dict[str, float]] = {}  # active Jobs whose runner has not reported → since when
        self.pod_notes: dict[str, dict[tuple[str, str], str]] = {}  # namespace → (evaluation, Job) → note
        self.pods_looked_at: dict[str, float] = {}
        self.looking_at_pods: dict[str, asyncio.Task] = {}
        self.rbac_done: set[str] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.batch: client.BatchV1Api | None = None
        self.core: client.CoreV1Api | None = None
        self.custom: client.CustomObjectsApi | None = None
        self.rbac: client.RbacAuthorizationV1Api | None = None

    def touch(self, *keys: Key) -> None:
        self.dirty.update(keys)
        self.wake.set()


STATE = State()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner_key(body: dict[str, Any]) -> Key | None:
    meta = body.get("metadata") or {}
    name = (meta.get("labels") or {}).get(LABEL_EVALUATION)
    return (meta.get("namespace"), name) if name else None


# -- lifecycle ---------------------------------------------------------------------------------------


# The namespaces `flageval operator -n` watches; empty: every namespace.
WATCHED_NAMESPACES: list[str] = []


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status has one writer and a structural schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="flageval.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="flageval.io", key="last-handled-configuration")
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    STATE.__init__()
    STATE.batch, STATE.core = client.BatchV1Api(), client.CoreV1Api()
    STATE.custom, STATE.rbac = client.CustomObjectsApi(), client.RbacAuthorizationV1Api()
    STATE.patch_pool = ThreadPoolExecutor(PATCHES_IN_FLIGHT, thread_name_prefix="status-patch")
    STATE.create_pool = ThreadPoolExecutor(CREATES_IN_FLIGHT, thread_name_prefix="job-create")
    # Jobs that exist before the watch reports them still count against the caps.
    if WATCHED_NAMESPACES:  # no cluster-wide right needed for an operator of a few namespaces
        lists = [await asyncio.to_thread(STATE.batch.list_namespaced_job, ns, label_selector=LABEL_EVALUATION) for ns in WATCHED_NAMESPACES]
    else:
        lists = [await asyncio.to_thread(STATE.batch.list_job_for_all_namespaces, label_selector=LABEL_EVALUATION)]
    for job in (job for found in lists for job in found.items):
        body = client.ApiClient().sanitize_for_serialization(job)
        key = _owner_key(body)
        if key:
            STATE.jobs[key][body["metadata"]["name"]] = body
    STATE.task = asyncio.create_task(_loop())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if STATE.task is not None:
        STATE.task.cancel()
        await asyncio.gather(STATE.task, return_exceptions=True)
    in_flight = [*STATE.patching.values(), *STATE.creating.values(), *STATE.looking_at_pods.values()]
    if in_flight:  # let the status patches and Job creations under way finish
        await asyncio.wait(in_flight, timeout=10)
    for pool in (STATE.patch_pool, STATE.create_pool):
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@kopf.on.probe(id="evaluations")
def probe(**_: Any) -> int:
    return len(STATE.evaluations)


# -- watches -----------------------------------------------------------------------------------------


# The watch handlers are coroutines: they only move dicts, so they run on the loop's thread (a sync
# handler would go through a thread pool for each event and race the loop over STATE).


@kopf.on.event(GROUP, VERSION, PLURAL)
async def evaluation_event(event: dict[str, Any], **_: Any) -> None:
    body = event["object"]
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if event.get("type") == "DELETED":
        STATE.evaluations.pop(key, None)
        STATE.dirty.discard(key)
        STATE.waiting.discard(key)
        STATE.last_patch.pop(key, None)
        STATE.written.pop(key, None)
        STATE.later.pop(key, None)
        STATE.manifests.pop(key, None)
        STATE.unstarted.pop(key, None)
        for job_key in [k for k in STATE.create_errors if k[0] == key]:
            del STATE.create_errors[job_key]
        return
    before = STATE.evaluations.get(key)
    STATE.evaluations[key] = body
    if before is None or before.get("spec") != body.get("spec") or before.get("metadata", {}).get("generation") != body["metadata"].get("generation"):
        STATE.touch(key)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_EVALUATION: kopf.PRESENT})
async def job_event(event: dict[str, Any], **_: Any) -> None:
    body = event["object"]
    key = _owner_key(body)
    if key is None:
        return
    name = body["metadata"]["name"]
    if event.get("type") == "DELETED":
        STATE.jobs[key].pop(name, None)
    else:
        STATE.jobs[key][name] = body
    if JobState.of(body).finished or event.get("type") == "DELETED":
        STATE.touch(*STATE.waiting)  # a slot may have become free
    STATE.touch(key)


@kopf.on.event(GROUP, VERSION, TASK_RESULT_PLURAL, labels={LABEL_EVALUATION: kopf.PRESENT})
async def task_result_event(event: dict[str, Any], **_: Any) -> None:
    body = event["object"]
    key = _owner_key(body)
    if key is None:
        return
    if event.get("type") == "DELETED":
        STATE.reports[key].pop(body["metadata"]["name"], None)
    else:
        STATE.reports[key][body["metadata"]["name"]] = body
    STATE.touch(key)


# -- the loop ----------------------------------------------------------------------------------------


async def _loop() -> None:
    last_resync = time.monotonic()
    while True:
        timeout = 1.0
        if STATE.later:
            timeout = min(timeout, max(0.0, min(STATE.later.values()) - time.monotonic()))
        try:
            await asyncio.wait_for(STATE.wake.wait(), timeout=timeout)
        except TimeoutError:
            pass
        STATE.wake.clear()
        now = time.monotonic()
        for key in [k for k, at in STATE.later.items() if at <= now]:  # throttled status due again
            del STATE.later[key]
            STATE.dirty.add(key)
        if now - last_resync >= STATE.settings.resync_interval:
            STATE.dirty.update(STATE.evaluations)
            last_resync = now
        for key in sorted(STATE.dirty):
            STATE.dirty.discard(key)
            started = time.monotonic()
            try:
                await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s/%s failed; retrying later", *key)
                STATE.dirty.add(key)
            RECONCILE_SECONDS.observe(time.monotonic() - started)
        _look_at_pods_when_due()
        phases: dict[str, int] = defaultdict(int)
        for body in STATE.evaluations.values():
            phases[(body.get("status") or {}).get("phase") or Phase.PENDING.value] += 1
        for phase in Phase:
            EVALUATIONS.labels(phase.value).set(phases.get(phase.value, 0))


async def _call(fn, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def ensure_runner_access(namespace: str) -> None:
    """The runner ServiceAccount and its RoleBinding (task results only) in a namespace, once."""
    s = STATE.settings
    if not s.manage_runner_rbac or namespace in STATE.rbac_done:
        return
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": s.runner_service_account, "labels": {"app.kubernetes.io/managed-by": "flageval-operator"}}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": s.runner_service_account, "labels": {"app.kubernetes.io/managed-by": "flageval-operator"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": s.runner_cluster_role},
               "subjects": [{"kind": "ServiceAccount", "name": s.runner_service_account, "namespace": namespace}]}
    for create, body in ((STATE.core.create_namespaced_service_account, sa), (STATE.rbac.create_namespaced_role_binding, binding)):
        try:
            await _call(create, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    STATE.rbac_done.add(namespace)


async def post_event(body: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
    meta = body["metadata"]
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
        "reason": reason, "message": message[:1024], "type": kind,
        "source": {"component": "flageval-operator"}, "reportingComponent": "flageval-operator",
        "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1,
    }
    try:
        await _call(STATE.core.create_namespaced_event, meta["namespace"], event)
    except ApiException as exc:
        log.warning("could not record event %s on %s/%s: HTTP %s", reason, meta["namespace"], meta["name"], exc.status)


def _transition_event(old: str | None, new: str, status: dict[str, Any]) -> tuple[str, str, str] | None:
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


def _spec_and_manifests(key: Key, body: dict[str, Any]) -> tuple[EvaluationSpec, list[dict[str, Any]]]:
    """The spec and the Job manifests of an Evaluation, built once per spec generation (they depend on
    nothing else that can change: name, namespace, uid, spec and the settings). Raises ValidationError."""
    meta = body["metadata"]
    version = (meta.get("uid"), meta.get("generation"))
    cached = STATE.manifests.get(key)
    if cached is not None and cached[0] == version and version[1] is not None:
        return cached[1], cached[2]
    spec = EvaluationSpec.model_validate(body["spec"])
    try:
        manifests = build_jobs(body, STATE.settings)
    except (DatasetError, ValidationError):
        manifests = []  # the status says why
    STATE.manifests[key] = (version, spec, manifests)
    return spec, manifests


async def reconcile(key: Key) -> None:
    body = STATE.evaluations.get(key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    s = STATE.settings
    namespace, name = key
    try:
        spec, manifests = _spec_and_manifests(key, body)
    except ValidationError as exc:
        log.warning("%s/%s has an invalid spec: %s", namespace, name, exc)
        return
    mine = STATE.jobs[key]

    for job_name, job in list(mine.items()):
        if (key, job_name) in STATE.creating:
            continue  # looked at again once created
        state = JobState.of(job)
        if not state.finished and state.suspended != spec.suspend:
            await _call(STATE.batch.patch_namespaced_job, state.name, namespace, {"spec": {"suspend": spec.suspend}})
            job.setdefault("spec", {})["suspend"] = spec.suspend

    waiting: dict[tuple[str, str], str] = {}
    missing = [] if spec.suspend else [m for m in manifests if m["metadata"]["name"] not in mine]
    if missing:
        await ensure_runner_access(namespace)
        running_all = sum(JobState.of(j).running for jobs in STATE.jobs.values() for j in jobs.values())
        running_mine = sum(JobState.of(j).running for j in mine.values())
        for manifest in missing:
            job_name = manifest["metadata"]["name"]
            if job_name in mine:
                continue
            labels = manifest["metadata"]["labels"]
            error = STATE.create_errors.get((key, job_name))
            if error:
                waiting[(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])] = f"Job not created yet: {error[1]}"
            if running_mine >= s.max_running_jobs_per_evaluation or running_all >= s.max_running_jobs:
                waiting[(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])] = (
                    f"waiting for a free slot ({running_mine}/{s.max_running_jobs_per_evaluation} running in this Evaluation, "
                    f"{running_all}/{s.max_running_jobs} in the cluster)")
                continue
            mine[job_name] = placeholder = copy.deepcopy(manifest)
            task = asyncio.create_task(_create_job(key, placeholder))
            STATE.creating[(key, job_name)] = task
            task.add_done_callback(lambda _t, k=(key, job_name): STATE.creating.pop(k, None))
            running_mine += 1
            running_all += 1
    if waiting:
        STATE.waiting.add(key)
    else:
        STATE.waiting.discard(key)
    reported = {_task_of(report) for report in STATE.reports[key].values()}
    since, now = STATE.unstarted.get(key, {}), time.monotonic()
    unstarted = {name: since.get(name, now) for name, job in mine.items()
                 if (key, name) not in STATE.creating and JobState.of(job).active and _task_of(job) not in reported}
    if unstarted:
        STATE.unstarted[key] = unstarted
    else:
        STATE.unstarted.pop(key, None)

    # The status: at most one patch per status_interval, sent beside the loop (which goes on creating
    # other Evaluations' Jobs meanwhile); a throttled Evaluation is looked at again when it is due.
    if key in STATE.patching:
        _look_again(key, time.monotonic() + s.status_interval / 4)
        return
    due = STATE.last_patch.get(key, float("-inf")) + s.status_interval
    if time.monotonic() < due:
        _look_again(key, due)
        return
    STATE.later.pop(key, None)
    task = asyncio.create_task(_patch_status(key, waiting))
    STATE.patching[key] = task
    task.add_done_callback(lambda _t, key=key: STATE.patching.pop(key, None))


def _look_again(key: Key, at: float) -> None:
    """Reconcile `key` again no later than `at` (time.monotonic())."""
    STATE.later[key] = min(STATE.later.get(key, float("inf")), at)


async def _create_job(key: Key, placeholder: dict[str, Any]) -> None:
    """Create one Job beside the loop; its placeholder in STATE.jobs gives way to what the server made
    (unless the watch has shown the Job already), or is dropped when creation failed (retried later)."""
    namespace, name = key[0], placeholder["metadata"]["name"]
    mine = STATE.jobs[key]
    try:
        created = await asyncio.get_running_loop().run_in_executor(STATE.create_pool, _create_job_json, namespace, placeholder)
    except asyncio.CancelledError:
        raise
    except ApiException as exc:
        answer = _api_status(exc)
        if answer.get("reason") == "AlreadyExists":  # created before a restart; the watch brings it
            STATE.create_errors.pop((key, name), None)
            return
        if exc.status == 409:  # a conflict (e.g. on a quota's usage), not a refusal: just try again
            if mine.get(name) is placeholder:
                del mine[name]
            _look_again(key, time.monotonic() + 0.5)
            return
        error = (f"HTTP {exc.status} {answer.get('reason') or ''}", f"HTTP {exc.status}: {answer.get('message') or exc.reason}")
    except Exception as exc:  # whatever it is, the Evaluation says so and it is tried again
        log.exception("creating Job %s/%s failed", namespace, name)
        error = (type(exc).__name__, f"{type(exc).__name__}: {exc}")
    else:
        JOBS_CREATED.inc()
        if mine.get(name) is placeholder:
            mine[name] = created
        STATE.create_errors.pop((key, name), None)
        STATE.touch(key)  # a suspend asked for meanwhile is applied now
        return
    if mine.get(name) is placeholder:
        del mine[name]
    before = STATE.create_errors.get((key, name))
    STATE.create_errors[(key, name)] = error  # before any await: a retry meanwhile must see it
    _look_again(key, time.monotonic() + 1.0)
    if before is None or before[0] != error[0]:  # said once per kind of refusal, not at every retry (its figures change)
        log.error("cannot create Job %s/%s: %s; retrying", namespace, name, error[1])
        body = STATE.evaluations.get(key)
        if body is not None:
            await post_event(body, "JobNotCreated", f"Job {name}: {error[1]}", "Warning")


def _task_of(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(evalModel, dataset) of a Job or task result, from its labels."""
    labels = body["metadata"].get("labels") or {}
    return labels.get(LABEL_EVAL_MODEL), labels.get(LABEL_DATASET)


def _look_at_pods_when_due() -> None:
    waiting = {namespace for namespace, _ in STATE.unstarted}
    for namespace in list(STATE.pod_notes):
        if namespace not in waiting:  # every runner there has started: nothing to explain
            del STATE.pod_notes[namespace]
    now = time.monotonic()
    late = {namespace for (namespace, _), jobs in STATE.unstarted.items() if now - min(jobs.values()) >= POD_LOOK_INTERVAL}
    for namespace in late:
        if namespace not in STATE.looking_at_pods and now - STATE.pods_looked_at.get(namespace, float("-inf")) >= POD_LOOK_INTERVAL:
            task = asyncio.create_task(_look_at_pods(namespace))
            STATE.looking_at_pods[namespace] = task
            task.add_done_callback(lambda _t, ns=namespace: STATE.looking_at_pods.pop(ns, None))


async def _look_at_pods(namespace: str) -> None:
    """Note why runner pods in `namespace` have not started; Evaluations whose notes changed are looked at again."""
    try:
        response = await _call(STATE.core.list_namespaced_pod, namespace, label_selector=LABEL_EVALUATION, _preload_content=False)
        pods = json.loads(response.data).get("items") or []
    except (ApiException, HTTPError, ValueError) as exc:  # the notes explain; without them status says less
        if namespace not in STATE.pods_looked_at:
            log.warning("cannot list pods in %s to explain runners that have not started: %s", namespace, exc)
        STATE.pods_looked_at[namespace] = time.monotonic()
        return
    STATE.pods_looked_at[namespace] = time.monotonic()
    notes: dict[tuple[str, str], str] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        note = pod_note(pod)
        if job and note:
            notes[(labels[LABEL_EVALUATION], job)] = note
    before = STATE.pod_notes.get(namespace, {})
    STATE.pod_notes[namespace] = notes
    changed = {evaluation for (evaluation, _), _note in set(before.items()) ^ set(notes.items())}
    STATE.touch(*((namespace, evaluation) for evaluation in changed))


def _create_job_json(namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The created Job as the server's JSON: the client's model classes would cost more CPU than the call."""
    response = STATE.batch.create_namespaced_job(namespace, manifest, _preload_content=False)
    return json.loads(response.data)


def _api_status(exc: ApiException) -> dict[str, Any]:
    """The Status object the API server answered with (reason, message…), or {}."""
    try:
        answer = json.loads(exc.body)
    except (TypeError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


class ReportsOf(Mapping):
    """The task results of a namespace's Evaluations by (evaluation, evalModel, dataset), read on demand:
    only a baseline in another Evaluation is ever looked up."""

    def __init__(self, namespace: str):
        self.namespace = namespace

    def __getitem__(self, key: tuple[str, str, str]) -> EvaluationTaskResult:
        evaluation, eval_model, dataset = key
        for report in STATE.reports.get((self.namespace, evaluation), {}).values():
            labels = report["metadata"].get("labels") or {}
            if labels.get(LABEL_EVAL_MODEL) == eval_model and labels.get(LABEL_DATASET) == dataset:
                return EvaluationTaskResult.model_validate(report)
        raise KeyError(key)

    def __iter__(self):
        for (ns, evaluation), reports in list(STATE.reports.items()):
            if ns == self.namespace:
                for report in reports.values():
                    labels = report["metadata"].get("labels") or {}
                    yield evaluation, labels.get(LABEL_EVAL_MODEL), labels.get(LABEL_DATASET)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _new_status(key: Key, waiting: dict[tuple[str, str], str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the Evaluation as last seen, the status it should have), or None when that is its status already."""
    body = STATE.evaluations.get(key)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    namespace, name = key
    jobs = {(j["metadata"]["labels"][LABEL_EVAL_MODEL], j["metadata"]["labels"][LABEL_DATASET]): JobState.of(j)
            for j in STATE.jobs[key].values() if LABEL_EVAL_MODEL in j["metadata"].get("labels", {})}
    reports = {}
    for report in STATE.reports[key].values():
        labels = report["metadata"].get("labels") or {}
        if LABEL_EVAL_MODEL in labels and LABEL_DATASET in labels:
            reports[(labels[LABEL_EVAL_MODEL], labels[LABEL_DATASET])] = EvaluationTaskResult.model_validate(report)
    notes = STATE.pod_notes.get(namespace, {})
    waiting = {**{task: notes[(name, job.name)] for task, job in jobs.items() if (name, job.name) in notes}, **waiting}
    others = [b for (ns, n), b in STATE.evaluations.items() if ns == namespace and n != name]
    new = status_body(evaluation_status(body, jobs, reports, others, others_reports=ReportsOf(namespace), waiting=waiting, now=_now()))
    if same_status(body.get("status") or {}, new) or same_status(STATE.written.get(key), new):
        return None
    return body, new


async def _patch_status(key: Key, waiting: dict[tuple[str, str], str]) -> None:
    namespace, name = key
    try:
        async with STATE.patch_slots:
            found = _new_status(key, waiting)  # the freshest view once a slot is free
            if found is None:
                return
            body, new = found
            old = body.get("status") or {}
            try:
                patched = await asyncio.get_running_loop().run_in_executor(
                    STATE.patch_pool, STATE.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name, {"status": new})
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
        STATE.last_patch[key] = time.monotonic()
        STATE.written[key] = new
        STATUS_PATCHES.inc()
        if STATE.evaluations.get(key) is body:  # else the watch has shown a newer object meanwhile
            STATE.evaluations[key] = patched
        transition = _transition_event(old.get("phase"), new["phase"], new)
        if transition:
            await post_event(patched, *transition)
        if new["phase"] == Phase.SUCCEEDED.value and old.get("phase") != new["phase"]:
            # This may be the baseline another Evaluation in the namespace waits for.
            STATE.touch(*(k for k in STATE.evaluations if k[0] == namespace and k != key))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("patching the status of %s/%s failed; retrying later", *key)
        STATE.later[key] = time.monotonic() + 1.0
