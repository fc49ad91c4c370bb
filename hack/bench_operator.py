#!/usr/bin/env python3
"""Operator benchmark: --evaluations Evaluations × --datasets datasets applied at once.

    . .venv/bin/activate && python hack/bench_operator.py [--evaluations 200] [--datasets 2] [--report-seconds 60] [--kueue] [--json]

Starts a control plane with hack/control-plane in a temporary state directory (or uses the one KUBECONFIG
names), installs the CRDs, makes a namespace with a results claim and starts
`flageval operator` on it as a subprocess, with the caps raised so that every Job may exist at once.
Its RSS is sampled every 0.2 s. Then:

1. every Evaluation is created at once from a thread pool (one client); the figure is the time from the
   first create until every Job exists (a watch on the namespace's Jobs);
2. no runner pod runs (no node agent): this process plays the runners' narrow channel instead — for each
   Job it creates the EvaluationTaskResult a runner would (name, labels and owner from the Job's
   FLAGEVAL_TASK_RESULT* environment, bodies from the same pydantic types) and patches its progress
   every --report-interval seconds for --report-seconds; status patches are counted per Evaluation
   from a watch (a change of .status) and from the operator's flageval_status_patches_total;
3. every runner then reports its result and its pod is marked Succeeded (as a kubelet would when the
   runner exits 0); the figure is the time until every Evaluation is Succeeded.

Side by side, for context (the "peer" column): the same Job manifests created directly from one client
with the same concurrency in another namespace (the API server's floor for the Jobs alone); one client
creating each Evaluation and then its Jobs, no operator (the floor of step 1 as a whole, the
Evaluations' own creation included); and the RSS of a bare `python -c "import kopf, kubernetes"` (the
memory floor). Everything it started is stopped and
removed at the end; every wait is bounded.

--kueue: the control plane runs Kueue (hack/control-plane kueue) with a ClusterQueue whose quota admits
every Job of both namespaces; the operator runs in Kueue mode (Jobs queued and created suspended, no caps
of its own), and the peer's manifests are the same queued Jobs. Also measured: the time until Kueue has
admitted every Job (its runner pod may then be created).

--backlog: the Evaluations are created first, the operator started after (a restart, an upgrade, Argo CD
syncing many at once); step 1 is timed from the operator's process start, so that, as for the peer, the
Evaluations' own creation is not in the figure (the operator's start, imports and first lists are).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from flageval.api import DatasetResult, Progress
from flageval.api.crd import CRDS
from flageval.api.evaluation import (
    API_VERSION,
    GROUP,
    PLURAL,
    TASK_RESULT_KIND,
    TASK_RESULT_PLURAL,
    VERSION,
    TaskOutcome,
    TaskProgress,
)
from flageval.controller.jobs import (
    CONTAINER,
    LABEL_DATASET,
    LABEL_EVALUATION,
    LABEL_QUEUE,
    build_jobs,
)
from flageval.controller.settings import Settings
from kubernetes import client, config

DATASETS = ["gsm8k", "mmlu", "mathvision"]
META_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
PAGE = 500


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until predicate() holds; raises TimeoutError after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


# -- HTTP: one pooled client, raw JSON (the generated models' deserialization would cost more CPU than the work measured)



def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)

class ApiError(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status


class Http:
    def __init__(self, kubeconfig: str, pool: int):
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool
        self.api = client.ApiClient(cfg)
        self.host = cfg.host.rstrip("/")
        self.pool = self.api.rest_client.pool_manager
        self.headers = {"Accept": "application/json", "User-Agent": "flageval-bench"}
        for auth in cfg.auth_settings().values():
            self.headers[auth["key"]] = auth["value"]

    def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None, content_type: str = "application/json",
                accept: str | None = None, timeout: float = 60, stream: bool = False):
        url = self.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = dict(self.headers)
        if accept:
            headers["Accept"] = accept
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        resp = self.pool.request(method, url, body=data, headers=headers, preload_content=not stream, retries=False,
                                 timeout=timeout if not stream else None)
        if resp.status >= 300:
            payload = resp.data if not stream else resp.read()
            raise ApiError(resp.status, payload)
        return resp if stream else orjson.loads(resp.data)

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw) -> Any:
        return self.request("POST", path, body, **kw)

    def merge(self, path: str, body: Any, **kw) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json", **kw)

    def delete(self, path: str, **kw) -> Any:
        try:
            return self.request("DELETE", path, **kw)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    def create(self, path: str, body: Any) -> tuple[Any, bool]:
        """(object, created); an existing object is no error."""
        try:
            return self.post(path, body), True
        except ApiError as exc:
            if exc.status != 409:
                raise
            return None, False

    def list_all(self, path: str, *, accept: str | None = None, query: dict | None = None) -> tuple[list[dict], str]:
        items, cont = [], None
        while True:
            q = {"limit": PAGE, **(query or {}), **({"continue": cont} if cont else {})}
            page = self.get(path, query=q, accept=accept)
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items, page["metadata"]["resourceVersion"]


def ev_path(ns: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}" + (f"/{name}" if name else "")


def tr_path(ns: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{TASK_RESULT_PLURAL}" + (f"/{name}" if name else "")


def job_path(ns: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs" + (f"/{name}" if name else "")


class Watcher(threading.Thread):
    """List, then watch one collection; on_event(type, object, monotonic time) for every change."""

    def __init__(self, http: Http, path: str, on_event, *, query: dict | None = None, accept: str | None = None):
        super().__init__(daemon=True, name=f"watch {path}")
        self.http, self.path, self.on_event, self.query, self.accept = http, path, on_event, query or {}, accept
        self.stop = threading.Event()
        self.synced = threading.Event()
        self.errors = 0

    def run(self) -> None:
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    items, rv = self.http.list_all(self.path, query=self.query, accept=self.accept)
                    now = time.monotonic()
                    for item in items:
                        self.on_event("ADDED", item, now)
                    self.synced.set()
                resp = self.http.request("GET", self.path, query={**self.query, "watch": "1", "resourceVersion": rv,
                                                                   "allowWatchBookmarks": "true", "timeoutSeconds": "10"},
                                         accept=self.accept.replace("List;", ";") if self.accept else None, stream=True)
                buffer = b""
                for chunk in resp.stream(65536, decode_content=False):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    now = time.monotonic()
                    for line in lines:
                        if not line:
                            continue
                        event = orjson.loads(line)
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            rv = None  # 410 Gone: list again
                            break
                        rv = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            self.on_event(kind, obj, now)
                    if rv is None or self.stop.is_set():
                        break
                resp.release_conn()
            except Exception as exc:  # noqa: BLE001 — a broken watch is resumed
                if self.stop.is_set():
                    return
                self.errors += 1
                log(f"watch {self.path}: {exc}; resuming")
                time.sleep(0.5)


# -- processes ---------------------------------------------------------------------------------------------


def proc_rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def proc_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True, name="rss")
        self.pid, self.every = pid, every
        self.peak = 0.0
        self.last = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            rss = proc_rss_mb(self.pid)
            if rss:
                self.last = rss
                self.peak = max(self.peak, rss)


class ControlPlane:
    """hack/control-plane in a private state directory, or the cluster KUBECONFIG names."""

    def __init__(self, reuse: bool, kueue: bool = False):
        self.state: Path | None = None
        self.env = dict(os.environ)
        kubeconfig = os.environ.get("KUBECONFIG")
        if reuse and kubeconfig:
            self.kubeconfig, self.started = kubeconfig, False
            log(f"using the cluster of KUBECONFIG={kubeconfig}" + (" (Kueue must run there)" if kueue else ""))
            return
        self.state = Path(tempfile.mkdtemp(prefix="flageval-bench-cluster."))
        self.env["FLAGEVAL_STATE"] = str(self.state)
        self.env["FLAGEVAL_KUEUE"] = "1" if kueue else "0"
        self.started = True
        log(f"starting a control plane in {self.state}")
        out = subprocess.run([str(ROOT / "hack" / "control-plane"), "up"], env=self.env, capture_output=True, text=True, timeout=180, check=False)
        if out.returncode != 0:
            self.down()
            raise SystemExit(f"hack/control-plane up failed:\n{out.stderr}")
        lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.env.update(lines)
        self.kubeconfig = lines["KUBECONFIG"]

    def pid(self, name: str) -> int | None:
        if self.state is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int((self.state / f"{name}.pid").read_text())
        return None

    def down(self) -> None:
        if not self.started or self.state is None:
            return
        subprocess.run([str(ROOT / "hack" / "control-plane"), "down"], env=self.env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        self.started = False


# -- the run ----------------------------------------------------------------------------------------------


def evaluation_body(name: str, datasets: list[str], limit: int) -> dict[str, Any]:
    """What tests/operator's `single` builds: one (baseline) service, the given datasets."""
    return {"apiVersion": API_VERSION, "kind": "Evaluation", "metadata": {"name": name},
            "spec": {"datasets": datasets, "limit": limit,
                     "evalInfos": [{"evalModel": f"{name}-nvidia-origin", "model": "qwen3", "evalUrl": "http://127.0.0.1:9/v1/chat/completions"}]}}


def dataset_total(dataset: str, limit: int) -> int:
    return 57 * limit if dataset == "mmlu" else limit  # mmlu's limit applies per subject


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.datasets = [DATASETS[i] if i < len(DATASETS) else f"synthetic-{i}" for i in range(args.datasets)]
        self.n_jobs = args.evaluations * args.datasets
        self.run_id = uuid.uuid4().hex[:6]
        self.ns = f"bench-op-{self.run_id}"
        self.peer_ns = f"bench-peer-{self.run_id}"
        self.pv = f"{self.ns}-results"
        if args.kueue:  # Kueue's quota decides; the operator's caps are off
            self.settings_env = {"FLAGEVAL_KUEUE_ENABLED": "true", "FLAGEVAL_KUEUE_QUEUE_NAME": "flageval"}
        else:
            self.settings_env = {"FLAGEVAL_MAX_RUNNING_JOBS": str(max(1000, self.n_jobs)),
                                 "FLAGEVAL_MAX_RUNNING_JOBS_PER_EVALUATION": str(max(2, args.datasets))}
        self.cluster_queue = f"bench-{self.run_id}"
        self.job_admitted: dict[str, float] = {}
        self.plane: ControlPlane | None = None
        self.http: Http | None = None
        self.pool = cf.ThreadPoolExecutor(args.workers, thread_name_prefix="bench")
        self.operator: subprocess.Popen | None = None
        self.profiler: subprocess.Popen | None = None
        self.operator_log = Path(tempfile.mkstemp(prefix="flageval-bench-operator.", suffix=".log")[1])
        self.watchers: list[Watcher] = []
        self.created_crds: list[str] = []
        self.lock = threading.Lock()
        # what the watches saw
        self.job_seen: dict[str, float] = {}
        self.job_complete: dict[str, float] = {}
        self.ev_status: dict[str, bytes] = {}
        self.ev_phase: dict[str, str] = {}
        self.ev_changes: dict[str, list[float]] = defaultdict(list)
        self.ev_succeeded: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    # -- CPU accounting: the operator, the control plane's processes (when this run started them), the machine

    def cpu_snapshot(self) -> dict[str, Any]:
        pids = {"operator": self.operator.pid if self.operator else None, "bench": os.getpid()}
        for name in ("kube-apiserver", "etcd", "kube-controller-manager", "kueue"):
            pids[name] = self.plane.pid(name)
        return {"t": time.monotonic(), "machine": machine_busy(), **{k: proc_cpu_seconds(v) for k, v in pids.items() if v},
                **({} if self.operator else {"operator": 0.0})}  # not started yet: all its CPU is since

    def cpu_since(self, before: dict[str, Any], prefix: str) -> None:
        now = self.cpu_snapshot()
        seconds = now["t"] - before["t"]
        busy = (now["machine"][0] - before["machine"][0]) / max(1, now["machine"][1] - before["machine"][1])
        self.results[f"{prefix}_cpu_pct"] = {k: round(100 * (now[k] - before[k]) / seconds, 1) for k in now if k not in ("t", "machine") and k in before}
        self.results[f"{prefix}_cpu_pct"]["machine_busy_of_all_cores"] = round(100 * busy, 1)

    # -- setup / teardown

    def setup(self) -> None:
        self.plane = ControlPlane(reuse=not self.args.own_cluster, kueue=self.args.kueue)
        self.http = Http(self.plane.kubeconfig, self.args.workers + 4)
        apiext = client.ApiextensionsV1Api(self.http.api)
        for build in CRDS.values():
            crd = build()
            _, created = self.http.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            if created:
                self.created_crds.append(crd["metadata"]["name"])
        for name in (build()["metadata"]["name"] for build in CRDS.values()):
            wait(lambda name=name: any(c.type == "Established" and c.status == "True"
                                       for c in apiext.read_custom_resource_definition(name).status.conditions or []), 30, f"{name} established")
        for ns in (self.ns, self.peer_ns):
            self.http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        # The results claim (as tests/operator/conftest.py's results_claim): a bound ReadWriteMany claim.
        self.http.post("/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": self.pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{self.pv}"},
                     "claimRef": {"namespace": self.ns, "name": "flageval-results"}}})
        self.http.post(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "flageval-results"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}})
        wait(lambda: (self.http.get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/flageval-results").get("status") or {}).get("phase") == "Bound",
             60, "the results claim Bound")
        if self.args.kueue:
            self.setup_kueue()

    def setup_kueue(self) -> None:
        """One flavor (the Jobs' nvidia/bj) and a ClusterQueue with room for every Job of both namespaces."""
        kueue = "/apis/kueue.x-k8s.io/v1beta2"
        n = 2 * self.n_jobs
        self.http.post(f"{kueue}/resourceflavors", {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                                                    "metadata": {"name": self.cluster_queue},
                                                    "spec": {"nodeLabels": {"flageval.io/chip-vendor": "nvidia", "flageval.io/region": "bj"}}})
        self.http.post(f"{kueue}/clusterqueues", {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": self.cluster_queue},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["pods", "cpu", "memory"], "flavors": [
                {"name": self.cluster_queue, "resources": [{"name": "pods", "nominalQuota": n}, {"name": "cpu", "nominalQuota": f"{n}"},
                                                           {"name": "memory", "nominalQuota": f"{n}Gi"}]}]}]}})
        for ns in (self.ns, self.peer_ns):
            self.http.post(f"{kueue}/namespaces/{ns}/localqueues", {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                                                                    "metadata": {"name": "flageval"}, "spec": {"clusterQueue": self.cluster_queue}})

    def start_operator(self) -> None:
        self.metrics_port, liveness = free_port(), free_port()
        env = {**self.plane.env, "KUBECONFIG": self.plane.kubeconfig, **self.settings_env}
        with open(self.operator_log, "w") as out:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "flageval.cli", "operator", "-n", self.ns, "--metrics-port", str(self.metrics_port),
                 "--metrics-host", "127.0.0.1", "--liveness", f"http://127.0.0.1:{liveness}/healthz"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

        def live() -> bool:
            if self.operator.poll() is not None:
                raise SystemExit(f"the operator exited:\n{self.operator_log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                return urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2).status == 200
            return False
        wait(live, 60, "the operator's liveness endpoint", 0.2)
        self.rss = RssSampler(self.operator.pid)
        self.rss.start()
        if self.args.profile:
            spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
            if spy is None:
                raise SystemExit("--profile needs py-spy")
            fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(self.args.profile).suffix, "flamegraph")
            self.profiler = subprocess.Popen([spy, "record", "--pid", str(self.operator.pid), "--rate", "50", "--format", fmt,
                                              "--output", self.args.profile, *(["--idle"] if self.args.profile_idle else []),
                                              *(["--gil"] if self.args.profile_gil else [])],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)  # its watches connect
        self.results["operator_idle_rss_mb"] = round(proc_rss_mb(self.operator.pid), 1)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("flageval_") and " " in line:
                name, value = line.rsplit(" ", 1)
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def cleanup(self) -> None:
        for w in self.watchers:
            w.stop.set()
        self.stop_profiler()
        if self.operator is not None and self.operator.poll() is None:
            terminate(self.operator)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.plane is None:
            return
        if self.plane.started:
            log("stopping the control plane")
            self.plane.down()
        elif self.http is not None:
            log("deleting what this run created in the cluster")
            with contextlib.suppress(Exception):
                for ns in (self.ns, self.peer_ns):
                    self.http.delete(f"/api/v1/namespaces/{ns}")
                self.http.delete(f"/api/v1/persistentvolumes/{self.pv}")
                if self.args.kueue:
                    self.http.delete(f"/apis/kueue.x-k8s.io/v1beta2/clusterqueues/{self.cluster_queue}")
                    self.http.delete(f"/apis/kueue.x-k8s.io/v1beta2/resourceflavors/{self.cluster_queue}")
                with contextlib.suppress(TimeoutError):
                    wait(lambda: all(self._gone(f"/api/v1/namespaces/{ns}") for ns in (self.ns, self.peer_ns)), 120, "the namespaces deleted", 1)
                for name in self.created_crds:
                    self.http.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        if self.operator_log.exists() and not self.args.keep_log:
            self.operator_log.unlink()

    def _gone(self, path: str) -> bool:
        try:
            self.http.get(path)
            return False
        except ApiError as exc:
            return exc.status == 404

    # -- watches

    def on_job(self, kind: str, job: dict, now: float) -> None:
        name = job["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                return
            self.job_seen.setdefault(name, now)
            if LABEL_QUEUE in job["metadata"].get("labels", {}) and not job["spec"].get("suspend"):
                self.job_admitted.setdefault(name, now)
            conditions = (job.get("status") or {}).get("conditions") or []
            if name not in self.job_complete and any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
                self.job_complete[name] = now

    def on_evaluation(self, kind: str, ev: dict, now: float) -> None:
        name = ev["metadata"]["name"]
        if kind == "DELETED":
            return
        status = ev.get("status")
        raw = orjson.dumps(status, option=orjson.OPT_SORT_KEYS) if status else b""
        with self.lock:
            if raw and raw != self.ev_status.get(name, b""):
                self.ev_changes[name].append(now)
            self.ev_status[name] = raw
            phase = (status or {}).get("phase") or "Pending"
            self.ev_phase[name] = phase
            if phase == "Succeeded":
                self.ev_succeeded.setdefault(name, now)

    def watch(self, path: str, on_event, **kw) -> Watcher:
        w = Watcher(self.http, path, on_event, **kw)
        w.start()
        self.watchers.append(w)
        if not w.synced.wait(30):
            raise SystemExit(f"could not watch {path}")
        return w

    # -- step 1: Evaluations applied at once → every Job exists

    def create_evaluations(self) -> float:
        """Every Evaluation created at once from the client's threads; the seconds it took."""
        a = self.args
        bodies = [evaluation_body(f"bench-{i:04d}", self.datasets, a.limit) for i in range(a.evaluations)]
        log(f"creating {a.evaluations} Evaluations × {a.datasets} datasets in {self.ns} ({a.workers} client threads)")
        t0 = time.monotonic()
        futures = [self.pool.submit(self.http.post, ev_path(self.ns), body) for body in bodies]
        self.evaluations = [f.result()["metadata"]["name"] for f in futures]
        return time.monotonic() - t0

    def apply(self) -> None:
        a = self.args
        self.watch(job_path(self.ns), self.on_job)
        self.watch(ev_path(self.ns), self.on_evaluation)
        if a.backlog:  # the Evaluations are there first; the clock starts with the operator's process
            applied = self.create_evaluations()
            cpu0, snap = 0.0, self.cpu_snapshot()
            t0 = time.monotonic()
            self.start_operator()
            self.results["operator_live_s"] = round(time.monotonic() - t0, 2)
        else:
            cpu0 = proc_cpu_seconds(self.operator.pid)
            snap = self.cpu_snapshot()
            t0 = time.monotonic()
            applied = self.create_evaluations()
        try:
            wait(lambda: len(self.job_seen) >= self.n_jobs, a.timeout, f"{self.n_jobs} Jobs", 0.05)
            all_jobs = max(self.job_seen.values()) - t0
        except TimeoutError:
            all_jobs = None
            log(f"only {len(self.job_seen)} of {self.n_jobs} Jobs after {a.timeout}s")
        if a.kueue:
            try:
                wait(lambda: len(self.job_admitted) >= self.n_jobs, a.timeout, f"{self.n_jobs} Jobs admitted by Kueue", 0.1)
                self.results["all_jobs_admitted_s"] = round(max(self.job_admitted.values()) - t0, 2)
            except TimeoutError:
                log(f"only {len(self.job_admitted)} of {self.n_jobs} Jobs admitted after {a.timeout}s")
        self.results.update(evaluations_created_s=round(applied, 2), jobs=len(self.job_seen),
                            all_jobs_exist_s=round(all_jobs, 2) if all_jobs is not None else None,
                            operator_cpu_s_creating=round(proc_cpu_seconds(self.operator.pid) - cpu0, 1),
                            rss_peak_after_jobs_mb=round(self.rss.peak, 1))
        self.cpu_since(snap, "creating")
        if self.job_seen:  # when they came: the first, then each quarter
            seen = sorted(t - t0 for t in self.job_seen.values())
            self.results["jobs_timeline_s"] = {f"{q}%": round(seen[max(0, len(seen) * q // 100 - 1)], 2) for q in (0, 25, 50, 75, 100)}
        since = "the operator's process started" if a.backlog else "the first create"
        log(f"{len(self.job_seen)} Jobs exist {all_jobs and round(all_jobs, 1)}s after {since} "
            f"(Evaluations created in {applied:.1f}s; the first Job and each quarter of them at {self.results.get('jobs_timeline_s')})")
        if self.args.profile_step == "creating":
            self.stop_profiler()

    # -- step 2: the runners' reports

    def runner_jobs(self) -> list[dict[str, Any]]:
        """Each Job's report target as its runner sees it: FLAGEVAL_TASK_RESULT{,_META} from the Job, plus its pod."""
        jobs, _ = self.http.list_all(job_path(self.ns), query={"labelSelector": LABEL_EVALUATION})
        out = []
        for job in jobs:
            container = job["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            ns, name = env["FLAGEVAL_TASK_RESULT"].split("/", 1)
            dataset = job["metadata"]["labels"][LABEL_DATASET]
            out.append({"job": job["metadata"]["name"], "namespace": ns, "name": name, "dataset": dataset,
                        "total": dataset_total(dataset, self.args.limit), "image": container.get("image") or "runner",
                        "meta": json.loads(env.get("FLAGEVAL_TASK_RESULT_META") or "{}"), "pod": "", "created": False})
        return out

    def pods_by_job(self) -> dict[str, str]:
        pods, _ = self.http.list_all(f"/api/v1/namespaces/{self.ns}/pods", accept=META_ONLY, query={"labelSelector": LABEL_EVALUATION})
        return {p["metadata"]["labels"].get("job-name", ""): p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}

    def send_progress(self, r: dict[str, Any], done: int, rate: float) -> float:
        started = time.monotonic()
        progress = TaskProgress.of(Progress(dataset=r["dataset"], done=done, total=r["total"], rate=rate)).model_dump(mode="json", by_alias=True)
        body = {"progress": progress, "result": None, "attempt": r["pod"]}
        if not r["created"]:  # the runner's first report creates its object (TaskResultReporter._create_or_patch)
            obj = {"apiVersion": API_VERSION, "kind": TASK_RESULT_KIND, "metadata": {"name": r["name"], "namespace": r["namespace"], **r["meta"]}, **body}
            self.http.create(tr_path(r["namespace"]), obj)
            r["created"] = True
        else:
            self.http.merge(tr_path(r["namespace"], r["name"]), body)
        return time.monotonic() - started

    def send_result(self, r: dict[str, Any], accuracy: float) -> None:
        total = r["total"]
        result = DatasetResult(dataset=r["dataset"], status="S", accuracy=accuracy, metrics={"exact_match": accuracy},
                               n_samples=total, progress=f"{total}/{total}")
        body = {"result": TaskOutcome.of(result).model_dump(mode="json", by_alias=True),
                "progress": TaskProgress.of(Progress(dataset=r["dataset"], done=total, total=total)).model_dump(mode="json", by_alias=True),
                "attempt": r["pod"]}
        if r["created"]:
            self.http.merge(tr_path(r["namespace"], r["name"]), body)
        else:  # its progress never got through: the result creates the object (TaskResultReporter._create_or_patch)
            obj = {"apiVersion": API_VERSION, "kind": TASK_RESULT_KIND, "metadata": {"name": r["name"], "namespace": r["namespace"], **r["meta"]}, **body}
            if not self.http.create(tr_path(r["namespace"]), obj)[1]:
                self.http.merge(tr_path(r["namespace"], r["name"]), body)
            r["created"] = True
        # The runner exits 0: its pod Succeeded, as a kubelet reports it (hack/node_agent.py's finish()).
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"phase": "Succeeded",
                  "conditions": [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in
                                 (("Initialized", "True"), ("ContainersReady", "False"), ("Ready", "False"))],
                  "containerStatuses": [{"name": CONTAINER, "image": r["image"], "imageID": "", "ready": False, "restartCount": 0, "started": False,
                                         "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": stamp, "finishedAt": stamp}}}]}
        self.http.merge(f"/api/v1/namespaces/{self.ns}/pods/{r['pod']}/status", {"status": status})

    def report(self) -> None:
        a = self.args
        runners = self.runner_jobs()
        wait(lambda: len(self.pods_by_job()) >= len(runners), max(120, a.timeout), "a pod for every Job", 1)
        pods = self.pods_by_job()
        for r in runners:
            r["pod"] = pods.get(r["job"], "")
        n = len(runners)
        log(f"{n} simulated runners report progress every {a.report_interval:g}s for {a.report_seconds:g}s")
        inflight = [0]
        sent, skipped, errors, latencies = [0], [0], [0], []
        guard = threading.Lock()
        limit = 4 * a.workers

        def done_cb(fut: cf.Future) -> None:
            with guard:
                inflight[0] -= 1
                if fut.exception() is not None:
                    errors[0] += 1
                    if errors[0] <= 3:
                        log(f"report failed: {fut.exception()}")
                else:
                    sent[0] += 1
                    latencies.append(fut.result())

        metrics0 = self.metrics()
        cpu0 = proc_cpu_seconds(self.operator.pid)
        snap = self.cpu_snapshot()
        t0 = time.monotonic()
        end = t0 + a.report_seconds
        tick, slot = 0.05, 0
        # Runner i reports at t0 + k·interval + i·interval/n: an even stream, as independent runners give.
        next_at = [t0 + i * a.report_interval / n for i in range(n)]
        while True:
            now = time.monotonic()
            if now >= end:
                break
            # The longest-waiting first; a runner that finds every client thread busy keeps its latest progress
            # and sends it as soon as one is free (as TaskResultReporter does while a send is slow).
            due = sorted((i for i in range(n) if next_at[i] <= now), key=next_at.__getitem__)
            for i in due:
                r = runners[i]
                elapsed = now - t0
                done = min(r["total"] - 1, int(r["total"] * elapsed / a.report_seconds))
                with guard:
                    if inflight[0] >= limit:
                        skipped[0] += 1
                        break
                    inflight[0] += 1
                next_at[i] = max(next_at[i] + a.report_interval, now)
                fut = self.pool.submit(self.send_progress, r, done, round(done / max(elapsed, 1e-3), 2))
                fut.add_done_callback(done_cb)
            slot += 1
            time.sleep(max(0.0, min(tick, end - time.monotonic())))
        with contextlib.suppress(TimeoutError):
            wait(lambda: inflight[0] == 0, 60, "the last progress reports")
        window = time.monotonic() - t0
        metrics1 = self.metrics()
        per_min = [sum(1 for t in self.ev_changes.get(name, []) if t0 <= t <= t0 + window) * 60 / window for name in self.evaluations]
        patches = metrics1.get("flageval_status_patches_total", 0) - metrics0.get("flageval_status_patches_total", 0)
        self.results.update(
            report_window_s=round(window, 1), report_interval_s=a.report_interval,
            task_result_writes=sent[0], task_result_writes_per_s=round(sent[0] / window, 1), task_result_writes_wanted_per_s=round(n / a.report_interval, 1),
            task_result_deferred_ticks=skipped[0], runners_never_reported=sum(not r["created"] for r in runners),
            task_result_errors=errors[0],
            task_result_write_p50_ms=round(statistics.median(latencies) * 1000, 1) if latencies else None,
            task_result_write_p95_ms=round(statistics.quantiles(latencies, n=20)[-1] * 1000, 1) if len(latencies) >= 20 else None,
            patches_per_eval_min_max=round(max(per_min), 1), patches_per_eval_min_mean=round(statistics.fmean(per_min), 1),
            patches_per_eval_min_min=round(min(per_min), 1),
            patches_per_eval_min_metric=round(patches * 60 / window / len(self.evaluations), 1),
            operator_cpu_pct_reporting=round(100 * (proc_cpu_seconds(self.operator.pid) - cpu0) / window, 1),
        )
        self.cpu_since(snap, "reporting")
        self.runners = runners
        log(f"progress: {sent[0]} task result writes ({errors[0]} failed); "
            f"status patches/Evaluation/min max {self.results['patches_per_eval_min_max']} mean {self.results['patches_per_eval_min_mean']}")

    # -- step 3: results → every Evaluation Succeeded

    def finish(self) -> None:
        a = self.args
        log(f"{len(self.runners)} simulated runners report their results and exit 0")
        snap = self.cpu_snapshot()
        t0 = time.monotonic()
        futures = [self.pool.submit(self.send_result, r, 70.0) for r in self.runners]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            log(f"{len(failed)} result reports failed, e.g. {failed[0]}")
        t_reported = time.monotonic()
        try:
            wait(lambda: len(self.ev_succeeded) >= len(self.evaluations), a.timeout, "every Evaluation Succeeded", 0.1)
        except TimeoutError:
            log(f"only {len(self.ev_succeeded)} of {len(self.evaluations)} Evaluations Succeeded after {a.timeout}s; phases: "
                f"{dict(sorted(_count(self.ev_phase.values()).items()))}")
        with contextlib.suppress(TimeoutError):
            wait(lambda: len(self.job_complete) >= len(self.runners), 30, "every Job Complete", 0.1)
        succeeded = len(self.ev_succeeded) == len(self.evaluations)
        self.results.update(
            results_reported_s=round(t_reported - t0, 2),
            evaluations_succeeded=len(self.ev_succeeded),
            all_succeeded=succeeded,
            all_succeeded_after_reports_s=round(max(self.ev_succeeded.values()) - t_reported, 2) if succeeded else None,
            jobs_complete=len(self.job_complete),
            all_jobs_complete_after_reports_s=round(max(self.job_complete.values()) - t_reported, 2) if len(self.job_complete) >= len(self.runners) else None,
            status_patches_total_metric=self.metrics().get("flageval_status_patches_total"),
            operator_rss_peak_mb=round(self.rss.peak, 1),
            operator_rss_hwm_mb=round(proc_rss_mb(self.operator.pid, "VmHWM"), 1),
            operator_cpu_s_total=round(proc_cpu_seconds(self.operator.pid), 1),
        )
        self.cpu_since(snap, "finishing")
        m = self.metrics()
        if m.get("flageval_reconcile_seconds_count"):
            self.results["reconciles"] = int(m["flageval_reconcile_seconds_count"])
            self.results["reconcile_mean_ms"] = round(1000 * m["flageval_reconcile_seconds_sum"] / m["flageval_reconcile_seconds_count"], 2)
        log(f"{len(self.ev_succeeded)} Evaluations Succeeded; operator peak RSS {self.rss.peak:.0f} MB")

    # -- peers

    def stop_profiler(self) -> None:
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.profiler.wait(60)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
                self.profiler.wait(10)
            log(f"operator profile: {self.args.profile}")

    def stop_operator(self) -> None:
        self.stop_profiler()
        self.rss.stop.set()
        terminate(self.operator)

    def peer_jobs(self) -> None:
        """The same Job manifests created straight from one client, same concurrency, in an unwatched namespace."""
        a = self.args
        self.http.post(f"/api/v1/namespaces/{self.peer_ns}/serviceaccounts",
                       {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "flageval-runner"}})
        bodies = [evaluation_body(f"bench-{i:04d}", self.datasets, a.limit) for i in range(a.evaluations)]
        evaluations = list(self.pool.map(lambda b: self.http.post(ev_path(self.peer_ns), b), bodies))
        env_settings = {k.removeprefix("FLAGEVAL_").lower(): v for k, v in self.settings_env.items()}
        manifests = [m for ev in evaluations for m in build_jobs(ev, Settings(**env_settings))]
        log(f"peer: creating the same {len(manifests)} Job manifests directly ({a.workers} client threads)")
        t0 = time.monotonic()
        list(self.pool.map(lambda m: self.http.post(job_path(self.peer_ns), m), manifests))
        self.results["peer_all_jobs_exist_s"] = round(time.monotonic() - t0, 2)
        # The floor of step 1 itself, no operator: the same client creates each Evaluation and then its Jobs.
        settings = Settings(**env_settings)

        def evaluation_then_jobs(body: dict[str, Any]) -> None:
            made = self.http.post(ev_path(self.peer_ns), body)
            for manifest in build_jobs(made, settings):
                self.http.post(job_path(self.peer_ns), manifest)
        bodies = [evaluation_body(f"floor-{i:04d}", self.datasets, a.limit) for i in range(a.evaluations)]
        log(f"floor: creating {len(bodies)} Evaluations, each followed by its Jobs, directly ({a.workers} client threads)")
        t0 = time.monotonic()
        list(self.pool.map(evaluation_then_jobs, bodies))
        self.results["floor_evaluations_then_jobs_s"] = round(time.monotonic() - t0, 2)

    def peer_rss(self) -> None:
        """RSS of a bare interpreter that imported kopf and kubernetes (and, for reference, the handlers)."""
        for key, code in (("peer_rss_kopf_kubernetes_mb", "import kopf, kubernetes"),
                          ("peer_rss_handlers_imported_mb", "import kopf, kubernetes, flageval.controller.handlers")):
            proc = subprocess.Popen([sys.executable, "-c", f"{code}; import sys; print('ok', flush=True); sys.stdin.read()"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                proc.stdout.readline()
                self.results[key] = round(proc_rss_mb(proc.pid), 1)
            finally:
                proc.stdin.close()
                proc.wait(10)

    def run(self) -> dict[str, Any]:
        a = self.args
        self.results.update(evaluations=a.evaluations, datasets=a.datasets, jobs_expected=self.n_jobs, workers=a.workers,
                            status_interval_s=Settings().status_interval, kueue=a.kueue, backlog=a.backlog)
        self.setup()
        if not a.backlog:
            self.start_operator()
        self.apply()
        if len(self.job_seen) >= self.n_jobs and not a.jobs_only:
            self.report()
            self.finish()
        self.stop_operator()
        self.results["operator_rss_peak_mb"] = round(self.rss.peak, 1)
        self.peer_jobs()
        self.peer_rss()
        if self.results.get("all_jobs_exist_s") and self.results.get("peer_all_jobs_exist_s"):
            self.results["jobs_time_to_peer"] = round(self.results["all_jobs_exist_s"] / self.results["peer_all_jobs_exist_s"], 2)
        if self.results.get("all_jobs_exist_s") and self.results.get("floor_evaluations_then_jobs_s"):
            self.results["jobs_time_to_floor"] = round(self.results["all_jobs_exist_s"] / self.results["floor_evaluations_then_jobs_s"], 2)
        return self.results


def _count(values) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for v in values:
        out[v] += 1
    return out


def table(r: dict[str, Any]) -> str:
    def f(v, unit=""):
        return "-" if v is None else f"{v:g}{unit}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    rows = [
        ("figure", "operator", "peer", "target"),
        (f"time until all {r['jobs_expected']} Jobs exist (s)", f(r.get("all_jobs_exist_s")), f(r.get("peer_all_jobs_exist_s")), "< 60"),
        ("  the same, operator / peer", f(r.get("jobs_time_to_peer")), "-", "<= 1.5"),
        ("  one client creating each Evaluation, then its Jobs (s)", "-", f(r.get("floor_evaluations_then_jobs_s")), "-"),
        ("  operator / that client", f(r.get("jobs_time_to_floor")), "-", "-"),
        *([("  Kueue has admitted every Job (s)", f(r.get("all_jobs_admitted_s")), "-", "-")] if r.get("kueue") else []),
        ("peak RSS (MB)", f(r.get("operator_rss_peak_mb")), f(r.get("peer_rss_kopf_kubernetes_mb")), "< 250 (1,000: < 400)"),
        ("status patches / Evaluation / min (max)", f(r.get("patches_per_eval_min_max")), "-", "<= 30"),
        ("status patches / Evaluation / min (mean)", f(r.get("patches_per_eval_min_mean")), "-", "<= 30"),
        (f"all {r['evaluations']} Succeeded after final reports (s)", f(r.get("all_succeeded_after_reports_s")),
         f(r.get("all_jobs_complete_after_reports_s")), "-"),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    notes = [
        f"{r['evaluations']} Evaluations × {r['datasets']} datasets, {r['workers']} client threads, status interval {f(r.get('status_interval_s'))} s"
        + (", Kueue: Jobs queued and admitted (the peer's too)" if r.get("kueue") else ""),
        f"Evaluations created in {f(r.get('evaluations_created_s'))} s"
        + (f", before the operator started (the Jobs' time is from its process start; live after {f(r.get('operator_live_s'))} s)" if r.get("backlog") else "")
        + f"; operator CPU while creating Jobs {f(r.get('operator_cpu_s_creating'))} s",
        (f"peer RSS: bare 'import kopf, kubernetes' {f(r.get('peer_rss_kopf_kubernetes_mb'))} MB; + flageval.controller.handlers "
        f"{f(r.get('peer_rss_handlers_imported_mb'))} MB; operator idle {f(r.get('operator_idle_rss_mb'))} MB"),
        "peer of 'Succeeded after final reports': every Job Complete (job controller) after the same reports",
        (f"reports: {f(r.get('task_result_writes'))} task result writes in {f(r.get('report_window_s'))} s "
        f"({f(r.get('task_result_writes_per_s'))}/s of {f(r.get('task_result_writes_wanted_per_s'))}/s wanted, p50 {f(r.get('task_result_write_p50_ms'))} ms, "
        f"p95 {f(r.get('task_result_write_p95_ms'))} ms, {f(r.get('task_result_errors'))} failed, {f(r.get('runners_never_reported'))} runners never through)"),
        "CPU % of one core (creating Jobs | reporting | finishing): " + "; ".join(
            f"{k} {r.get('creating_cpu_pct', {}).get(k, '-')} | {r.get('reporting_cpu_pct', {}).get(k, '-')} | {r.get('finishing_cpu_pct', {}).get(k, '-')}"
            for k in ("operator", "kube-apiserver", "etcd", "kube-controller-manager", "kueue", "bench") if k in r.get("reporting_cpu_pct", r.get("creating_cpu_pct", {})))
        + f"; machine busy {r.get('reporting_cpu_pct', {}).get('machine_busy_of_all_cores', '-')} % of all cores while reporting",
        (f"status patches / Evaluation / min: min {f(r.get('patches_per_eval_min_min'))}, from the operator's counter {f(r.get('patches_per_eval_min_metric'))}; "
        f"Evaluations Succeeded {f(r.get('evaluations_succeeded'))}/{r['evaluations']}; reconciles {f(r.get('reconciles'))} "
        f"(mean {f(r.get('reconcile_mean_ms'))} ms)"),
    ]
    return "\n".join(lines + [""] + notes)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--evaluations", type=int, default=200)
    p.add_argument("--datasets", type=int, default=2, help="datasets per Evaluation: gsm8k, mmlu, mathvision, then synthetic names")
    p.add_argument("--limit", type=int, default=20, help="the Evaluations' spec.limit (sets the simulated totals)")
    p.add_argument("--report-seconds", type=float, default=60, help="how long the simulated runners report progress")
    p.add_argument("--report-interval", type=float, default=2.0,
                   help="seconds between one runner's progress reports (a runner's TaskResultReporter sends at most one per 2 s)")
    p.add_argument("--workers", type=int, default=8, help="client threads (one pooled client)")
    p.add_argument("--timeout", type=float, default=300, help="bound of each wait")
    p.add_argument("--own-cluster", action="store_true", help="start a control plane even when KUBECONFIG is set")
    p.add_argument("--keep-log", action="store_true", help="keep the operator's log (its path is printed)")
    p.add_argument("--profile", metavar="PATH", help="record the operator with py-spy into PATH (.svg flamegraph, .txt collapsed stacks, .json speedscope)")
    p.add_argument("--profile-idle", action="store_true", help="with --profile: include idle threads")
    p.add_argument("--profile-gil", action="store_true", help="with --profile: only the thread holding the GIL (where the CPU goes)")
    p.add_argument("--backlog", action="store_true",
                   help="the Evaluations are created before the operator starts (a restart, an upgrade, a sync of many): "
                        "step 1 is timed from the operator's process start, Evaluations' creation excluded as in the peer")
    p.add_argument("--jobs-only", action="store_true", help="step 1 only: no reports, no finish (the Jobs figure and the peer's)")
    p.add_argument("--profile-step", choices=("all", "creating"), default="all",
                   help="with --profile: the whole run, or step 1 only (until every Job exists)")
    p.add_argument("--kueue", action="store_true", help="Jobs queued in Kueue (started with the control plane) and admitted by it")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        if args.keep_log:
            log(f"operator log: {bench.operator_log}")
        bench.cleanup()
    print(json.dumps(results, indent=1) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
