"""A stand-in kubelet for the local control plane: registers labelled Nodes and runs the pods bound to
them as local processes. Development and test tooling, not part of the product.

What it does, as a kubelet would: Nodes Ready with allocatable resources, heartbeats (status + Lease),
the not-ready taint removed; each bound pod's containers run as processes with their command, args,
env (literal, Secret, ConfigMap, fieldRef), working dir and volumes (emptyDir per pod, one host
directory per PVC claim, Secret/ConfigMap files, projected service-account tokens from the
TokenRequest API) bind-mounted at their mountPaths in a private mount namespace; pod status follows
the processes; a deleted pod's processes get SIGTERM, SIGKILL after the grace period, and the pod is
then removed. securityContext is not enforced (the processes run as this user).

Two things a container runtime gives each pod and processes on one host do not have:
- its own filesystem: a volume mounted over a directory that holds this checkout (an emptyDir at /tmp
  while the checkout is under /tmp) would hide the virtualenv the pod runs from, so the checkout, the
  virtualenv and the data directory are bound back in at their own paths beneath such a mount;
- its own network: pods share the host's ports, so a containerPort another pod of this agent holds (or
  that is in use on the host) is mapped to a free host port, and an argument or env value naming it
  (`9091`, `--metrics-port=9091`) is rewritten to that port. The annotation `node-agent.flageval.io/ports`
  on the pod maps "container/port name or number" to the host port.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent")

DEFAULT_NODES = [
    {"name": "node-nvidia-bj", "vendor": "nvidia", "chip": "Nvidia-H100", "region": "bj"},
    {"name": "node-ascend-bj", "vendor": "ascend", "chip": "Ascend-910B", "region": "bj"},
    {"name": "node-nvidia-sz", "vendor": "nvidia", "chip": "Nvidia-H100", "region": "sz"},
]
HEARTBEAT_SECONDS = 10
VENV_BIN = str(Path(sys.prefix) / "bin")  # the runner image's entry point, `flageval`, lives here
CHECKOUT = Path(__file__).resolve().parents[1]
PORTS_ANNOTATION = "node-agent.flageval.io/ports"


def _install_paths() -> list[Path]:
    """What a pod's processes run from and read: this checkout, its virtualenv, whatever else is on its
    import path (a .pth file may name another environment's site-packages), the benchmark data."""
    paths = {CHECKOUT, Path(sys.prefix).resolve(), CHECKOUT.parent / "shared"}
    paths.update(Path(entry).resolve() for entry in sys.path if entry and os.path.isabs(entry))
    if os.environ.get("FLAGEVAL_DATA_DIR"):
        data = Path(os.environ["FLAGEVAL_DATA_DIR"])
        paths.update((data, data.resolve()))  # pods name it as given, which may be a link under /tmp
    return sorted(p for p in paths if p.is_dir())


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_port(value: str, ports: dict[int, int]) -> str:
    """`value` with a mapped port swapped: the whole value (`9091`) or what follows its `=` (`--port=9091`)."""
    head, eq, tail = value.rpartition("=")
    number = tail if eq else value
    if number.isdigit() and int(number) in ports:
        return f"{head}{eq}{ports[int(number)]}"
    return value


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Agent:
    def __init__(self, nodes: list[dict], state: Path, api_port: str):
        self.nodes = nodes
        self.names = {n["name"] for n in nodes}
        self.state = state
        self.api_port = api_port
        self.core = client.CoreV1Api()
        self.coordination = client.CoordinationV1Api()
        self.pods: dict[str, PodRunner] = {}  # uid → runner
        self.lock = threading.Lock()
        self.held_ports: dict[int, str] = {}  # host port → uid of the pod holding it
        self.stopping = threading.Event()

    # -- nodes ------------------------------------------------------------------------------------

    def register(self) -> None:
        for node in self.nodes:
            labels = {
                "kubernetes.io/hostname": node["name"],
                "kubernetes.io/os": "linux",
                "flageval.io/chip-vendor": node["vendor"],
                "flageval.io/chip": node["chip"],
                "flageval.io/region": node["region"],
            }
            body = client.V1Node(metadata=client.V1ObjectMeta(name=node["name"], labels=labels))
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(node["name"], {"metadata": {"labels": labels}})
        self.heartbeat()

    def heartbeat(self) -> None:
        stamp = now()
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        for node in self.nodes:
            status = {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node["name"]}],
                    "nodeInfo": {"kubeletVersion": "v1.34.4-local", "operatingSystem": "linux", "architecture": "amd64",
                                 "containerRuntimeVersion": "local-process://1", "kernelVersion": os.uname().release,
                                 "osImage": "local", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
                    "conditions": [
                        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "local node agent is ready",
                         "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
                        *({"type": t, "status": "False", "reason": "KubeletHas" + r, "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                          for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"), ("PIDPressure", "SufficientPID"))),
                    ],
                }
            }
            try:
                self.core.patch_node_status(node["name"], status)
                current = self.core.read_node(node["name"])
                taints = current.spec.taints or []
                kept = [t for t in taints if not t.key.startswith("node.kubernetes.io/not-ready") and not t.key.startswith("node.kubernetes.io/unreachable")]
                if len(kept) != len(taints):
                    self.core.patch_node(node["name"], {"spec": {"taints": [t.to_dict() for t in kept] or None}})
                self.renew_lease(node["name"])
            except Exception as exc:  # noqa: BLE001 - the API server away: the next heartbeat tries again
                log.warning("heartbeat of %s failed: %s", node["name"], getattr(exc, "reason", None) or exc)

    def renew_lease(self, name: str) -> None:
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", {"metadata": {"name": name}, "spec": spec})

    def heartbeats(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            self.heartbeat()

    # -- pods -------------------------------------------------------------------------------------

    def watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                pods = self.core.list_pod_for_all_namespaces()
                for pod in pods.items:
                    self.handle(pod)
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, resource_version=pods.metadata.resource_version, timeout_seconds=60)
                for event in stream:
                    if self.stopping.is_set():
                        return
                    self.handle(event["object"], deleted=event["type"] == "DELETED")
            except Exception as exc:  # noqa: BLE001 - a broken watch is restarted; one bad pod never stops the agent
                log.warning("pod watch restarted: %s", exc)
                time.sleep(1)

    def handle(self, pod, deleted: bool = False) -> None:
        if pod.spec.node_name not in self.names:
            return
        uid = pod.metadata.uid
        with self.lock:
            runner = self.pods.get(uid)
            if deleted:
                if runner:
                    runner.stop(0)
                    self.pods.pop(uid, None)
                return
            if pod.metadata.deletion_timestamp is not None:
                if runner is None:
                    self.finish_deletion(pod)
                elif not runner.deleting:
                    runner.deleting = True
                    grace = pod.metadata.deletion_grace_period_seconds or 0
                    threading.Thread(target=self.delete_pod, args=(runner, pod, grace), daemon=True).start()
                return
            if runner is None and pod.status.phase not in ("Succeeded", "Failed"):
                runner = PodRunner(self, pod)
                self.pods[uid] = runner
                threading.Thread(target=runner.run, name=f"pod-{pod.metadata.name}", daemon=True).start()

    def delete_pod(self, runner: PodRunner, pod, grace: int) -> None:
        runner.stop(grace)
        self.finish_deletion(pod)
        with self.lock:
            self.pods.pop(pod.metadata.uid, None)
        self.release_ports(pod.metadata.uid)

    def host_ports(self, uid: str, wanted: list[int]) -> dict[int, int]:
        """A host port for each containerPort of a pod: the same number while no other pod holds it and the
        host has it free, else a free one."""
        mapped: dict[int, int] = {}
        with self.lock:
            for port in wanted:
                host = port if port not in self.held_ports and _port_free(port) else _free_port()
                while host in self.held_ports:
                    host = _free_port()
                self.held_ports[host] = uid
                mapped[port] = host
        return mapped

    def release_ports(self, uid: str) -> None:
        with self.lock:
            for port in [p for p, holder in self.held_ports.items() if holder == uid]:
                del self.held_ports[port]

    def finish_deletion(self, pod) -> None:
        try:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid)))
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("could not complete deletion of %s: %s", pod.metadata.name, exc.reason)

    def run(self) -> None:
        self.register()
        threading.Thread(target=self.heartbeats, daemon=True).start()
        self.watch_pods()


class PodRunner:
    """The processes of one pod: init containers in order, then the containers side by side."""

    def __init__(self, agent: Agent, pod):
        self.agent, self.pod = agent, pod
        self.core = agent.core
        self.dir = agent.state / "pods" / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.deleting = False
        self.stopped = threading.Event()
        self.restarts: dict[str, int] = {}
        self.envs: dict[str, dict[str, str]] = {}  # container name → its environment, resolved before any starts
        self.ports: dict[int, int] = {}  # containerPort → host port (see the module's docstring)

    # -- volumes and env ----------------------------------------------------------------------------

    def volumes(self) -> dict[str, Path]:
        ns = self.pod.metadata.namespace
        paths: dict[str, Path] = {}
        for volume in self.pod.spec.volumes or []:
            target = self.dir / "volumes" / volume.name
            if volume.persistent_volume_claim is not None:
                target = self.agent.state / "claims" / ns / volume.persistent_volume_claim.claim_name
            elif volume.host_path is not None:
                target = Path(volume.host_path.path)
            target.mkdir(parents=True, exist_ok=True)
            if volume.secret is not None:
                secret = self.core.read_namespaced_secret(volume.secret.secret_name, ns)
                for key, value in (secret.data or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
            if volume.config_map is not None:
                cm = self.core.read_namespaced_config_map(volume.config_map.name, ns)
                for key, value in (cm.data or {}).items():
                    (target / key).write_text(value)
            if volume.projected is not None:
                for source in volume.projected.sources or []:
                    if source.service_account_token is not None:
                        (target / source.service_account_token.path).write_text(self.token(source.service_account_token))
                    if source.config_map is not None:
                        cm = self.core.read_namespaced_config_map(source.config_map.name, ns)
                        for item in source.config_map.items or [client.V1KeyToPath(key=k, path=k) for k in cm.data or {}]:
                            (target / item.path).write_text((cm.data or {}).get(item.key, ""))
                    if source.downward_api is not None:
                        for item in source.downward_api.items or []:
                            (target / item.path).write_text(self.field(item.field_ref.field_path) if item.field_ref else "")
                    if source.secret is not None:
                        secret = self.core.read_namespaced_secret(source.secret.name, ns)
                        for key, value in (secret.data or {}).items():
                            (target / key).write_bytes(base64.b64decode(value))
            paths[volume.name] = target
        return paths

    def prepare(self) -> dict[str, Path] | None:
        """Volumes and every container's env, waited for as a kubelet does: a ConfigMap, Secret or key that
        is not there yet (kube-root-ca.crt lags a new namespace a moment) keeps the pod Pending, saying so,
        until it appears. None once the pod is deleted meanwhile."""
        delay, said = 0.5, None
        while not self.deleting:
            try:
                volumes = self.volumes()
                self.envs = {c.name: self.env(c) for c in [*(self.pod.spec.init_containers or []), *self.pod.spec.containers]}
                return volumes
            except ApiException as exc:
                if exc.status != 404:
                    raise
                message = _status_message(exc)
            except KeyError as exc:
                message = f"couldn't find key {exc}"
            if message != said:
                log.info("pod %s waits: %s", self.pod.metadata.name, message)
                self.patch_status({"phase": "Pending", "conditions": self.conditions(False), "containerStatuses": [
                    self.container_status(c, {"waiting": {"reason": "CreateContainerConfigError", "message": message}}, False)
                    for c in self.pod.spec.containers]})
                said = message
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.deleting:
                time.sleep(0.1)
            delay = min(delay * 2, 5.0)
        return None

    def token(self, source) -> str:
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[source.audience] if source.audience else [],
            expiration_seconds=source.expiration_seconds or 3600,
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=self.pod.metadata.name, uid=self.pod.metadata.uid),
        ))
        sa = self.pod.spec.service_account_name or "default"
        return self.core.create_namespaced_service_account_token(sa, self.pod.metadata.namespace, request).status.token

    def field(self, path: str) -> str:
        meta = self.pod.metadata
        values = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
                  "spec.nodeName": self.pod.spec.node_name, "spec.serviceAccountName": self.pod.spec.service_account_name or "default",
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if path.startswith("metadata.labels['"):
            return (meta.labels or {}).get(path[len("metadata.labels['"):-2], "")
        if path.startswith("metadata.annotations['"):
            return (meta.annotations or {}).get(path[len("metadata.annotations['"):-2], "")
        return values.get(path, "")

    def env(self, container) -> dict[str, str]:
        ns = self.pod.metadata.namespace
        env = {"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir / "home"),
               "HOSTNAME": self.pod.metadata.name, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": self.agent.api_port, "PYTHONUNBUFFERED": "1"}
        (self.dir / "home").mkdir(parents=True, exist_ok=True)
        for source in container.env_from or []:
            if source.config_map_ref is not None:
                env.update(self.core.read_namespaced_config_map(source.config_map_ref.name, ns).data or {})
            if source.secret_ref is not None:
                data = self.core.read_namespaced_secret(source.secret_ref.name, ns).data or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _with_port(var.value or "", self.ports)
                continue
            ref = var.value_from
            try:
                if ref.secret_key_ref is not None:
                    data = self.core.read_namespaced_secret(ref.secret_key_ref.name, ns).data or {}
                    env[var.name] = base64.b64decode(data[ref.secret_key_ref.key]).decode()
                elif ref.config_map_key_ref is not None:
                    env[var.name] = (self.core.read_namespaced_config_map(ref.config_map_key_ref.name, ns).data or {})[ref.config_map_key_ref.key]
                elif ref.field_ref is not None:
                    env[var.name] = self.field(ref.field_ref.field_path)
                elif ref.resource_field_ref is not None:
                    env[var.name] = "1"
            except (ApiException, KeyError):
                optional = (ref.secret_key_ref or ref.config_map_key_ref)
                if not (optional and optional.optional):
                    raise
        return env

    def command(self, container, volumes: dict[str, Path]) -> list[str]:
        argv = list(container.command or []) + list(container.args or [])
        if not container.command:
            argv = ["flageval", *argv] if "flageval" in (container.image or "") else argv
        if not argv:
            raise RuntimeError(f"container {container.name} has no command (images are not pulled here)")
        argv = [_with_port(arg, self.ports) for arg in argv]
        mounts = [(volumes[m.name] / (m.sub_path or ""), m.mount_path) for m in container.volume_mounts or [] if m.name in volumes]
        if not mounts or os.geteuid() != 0:
            return argv
        # A private mount namespace puts each volume at its real path for this process only. Parents are
        # mounted before what lies beneath them. A host path the pod still needs that a mount would hide
        # (another volume's source, this checkout under an emptyDir at /tmp) is first bound into that
        # mount's source at the same relative place, and the source is then mounted recursively.
        mounts.sort(key=lambda m: len(Path(m[1]).parts))
        needed = sorted({*_install_paths(), self.dir, *(src for src, _ in mounts)}, key=lambda p: len(p.parts))  # self.dir: the pod's HOME
        steps = []
        for src, dst in mounts:
            target = Path(dst)
            for path in needed:
                if path != src and path != target and path.is_relative_to(target):
                    inner = src / path.relative_to(target)
                    steps.append(f"mkdir -p {shlex.quote(str(inner))} && mount --bind {shlex.quote(str(path))} {shlex.quote(str(inner))}")
            steps.append(f"mkdir -p {shlex.quote(dst)} && mount --rbind {shlex.quote(str(src))} {shlex.quote(dst)}")
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{' && '.join(steps)} && exec \"$@\"", "sh", *argv]

    # -- running ------------------------------------------------------------------------------------

    def patch_status(self, status: dict) -> None:
        """As a kubelet keeps syncing: while the API server is away (unreachable, 5xx) the status is sent
        again until it is taken, or the pod is gone; a pod's end is never lost."""
        delay, said = 0.5, False
        while True:
            try:
                self.core.patch_namespaced_pod_status(self.pod.metadata.name, self.pod.metadata.namespace, {"status": status},
                                                      _request_timeout=15)
                return
            except ApiException as exc:
                if exc.status == 404 or not (exc.status >= 500 or exc.status == 429):
                    if exc.status != 404:
                        log.warning("status of %s: %s", self.pod.metadata.name, exc.reason)
                    return
                problem = f"HTTP {exc.status}"
            except Exception as exc:  # noqa: BLE001 - unreachable: retried
                problem = type(exc).__name__
            if not said:
                log.warning("status of %s not taken (%s); retrying", self.pod.metadata.name, problem)
                said = True
            if self.agent.stopping.wait(delay):
                return
            delay = min(delay * 2, 5.0)

    def container_status(self, container, state: dict, ready: bool) -> dict:
        return {"name": container.name, "image": container.image or "local", "imageID": "", "ready": ready,
                "restartCount": self.restarts.get(container.name, 0), "started": "running" in state, "state": state}

    def conditions(self, ready: bool) -> list[dict]:
        stamp = now()
        flag = "True" if ready else "False"
        return [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in
                (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))]

    def spawn(self, container, volumes) -> subprocess.Popen:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{container.name}.log", "ab")  # noqa: SIM115 - the child inherits it for its lifetime
        workdir = container.working_dir or str(self.dir)
        if container.working_dir and not os.path.isdir(workdir) and not any(m.mount_path == workdir for m in container.volume_mounts or []):
            os.makedirs(workdir, exist_ok=True)
        cwd = workdir if os.path.isdir(workdir) else str(self.dir)
        argv = self.command(container, volumes)
        if cwd != workdir:  # the working dir is a mount that exists only inside the namespace
            argv = ["sh", "-c", f"cd {shlex.quote(workdir)} && exec \"$@\"", "sh", *argv] if argv[0] != "unshare" else argv[:6] + [argv[6].replace(" && exec", f" && cd {shlex.quote(workdir)} && exec", 1)] + argv[7:]
        return subprocess.Popen(argv, env=self.envs[container.name], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def map_ports(self) -> None:
        containers = [*(self.pod.spec.init_containers or []), *self.pod.spec.containers]
        declared = [(c.name, p) for c in containers for p in c.ports or []]
        if not declared:
            return
        self.ports = self.agent.host_ports(self.pod.metadata.uid, sorted({p.container_port for _, p in declared}))
        shown = {f"{container}/{port.name or port.container_port}": self.ports[port.container_port] for container, port in declared}
        try:
            self.core.patch_namespaced_pod(self.pod.metadata.name, self.pod.metadata.namespace,
                                           {"metadata": {"annotations": {PORTS_ANNOTATION: json.dumps(shown, sort_keys=True)}}})
        except ApiException as exc:
            log.warning("could not annotate %s with its ports: %s", self.pod.metadata.name, exc.reason)

    def run(self) -> None:
        name = self.pod.metadata.name
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.map_ports()
            volumes = self.prepare()
            if volumes is None:  # deleted while waiting for what it references
                self.stopped.set()
                return
            for container in self.pod.spec.init_containers or []:
                code = self.spawn(container, volumes).wait()
                if code != 0:
                    return self.finish({container.name: code}, failed_init=True)
            started = now()
            self.processes = {c.name: self.spawn(c, volumes) for c in self.pod.spec.containers}
        except Exception as exc:  # noqa: BLE001 - whatever stops a start, the pod says why
            log.warning("pod %s could not start: %s", name, exc)
            self.agent.release_ports(self.pod.metadata.uid)
            return self.patch_status({"phase": "Failed", "reason": "StartError", "message": str(exc)[:500], "hostIP": "127.0.0.1", "podIP": "127.0.0.1"})
        self.patch_status({"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                           "startTime": started, "conditions": self.conditions(True),
                           "containerStatuses": [self.container_status(c, {"running": {"startedAt": started}}, True) for c in self.pod.spec.containers]})
        codes: dict[str, int] = {}
        policy = self.pod.spec.restart_policy or "Always"
        while len(codes) < len(self.processes):
            for container in self.pod.spec.containers:
                proc = self.processes[container.name]
                if container.name in codes or proc.poll() is None:
                    continue
                if not self.deleting and (policy == "Always" or (policy == "OnFailure" and proc.returncode != 0)):
                    self.restarts[container.name] = self.restarts.get(container.name, 0) + 1
                    time.sleep(min(10, self.restarts[container.name]))  # back off as a kubelet does
                    if self.deleting:
                        codes[container.name] = proc.returncode
                        continue
                    self.processes[container.name] = self.spawn(container, volumes)
                    self.patch_status({"containerStatuses": [self.container_status(c, {"running": {"startedAt": now()}}, True) for c in self.pod.spec.containers]})
                    continue
                codes[container.name] = proc.returncode
            time.sleep(0.1)
        self.finish(codes)

    def finish(self, codes: dict[str, int], failed_init: bool = False) -> None:
        self.stopped.set()
        self.agent.release_ports(self.pod.metadata.uid)
        if self.deleting:
            return
        stamp = now()
        failed = failed_init or any(code != 0 for code in codes.values())
        statuses = []
        for container in self.pod.spec.containers:
            code = codes.get(container.name, 1)
            code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal number
            statuses.append(self.container_status(container, {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": stamp, "finishedAt": stamp}}, False))
        self.patch_status({"phase": "Failed" if failed else "Succeeded", "conditions": self.conditions(False), "containerStatuses": statuses})

    def stop(self, grace: int) -> None:
        self.deleting = True
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


def _status_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--nodes", default=os.environ.get("FLAGEVAL_NODES"), help="JSON list of {name, vendor, chip, region}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config.load_kube_config(args.kubeconfig)
    api_port = client.Configuration.get_default_copy().host.rsplit(":", 1)[-1]
    nodes = json.loads(args.nodes) if args.nodes else DEFAULT_NODES
    agent = Agent(nodes, args.state, api_port)
    signal.signal(signal.SIGTERM, lambda *_: (agent.stopping.set(), [r.stop(2) for r in list(agent.pods.values())], sys.exit(0)))
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
