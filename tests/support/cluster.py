"""The real control plane (hack/control-plane) and node agent (hack/node-agent) as pytest fixtures.

One isolated control plane per test session in a temporary state directory; a fresh namespace per
test. Tests that use these fail — never skip — when the control plane cannot start.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"


@dataclass
class ControlPlane:
    state: Path
    kubeconfig: Path
    kubectl_path: str
    helm_path: str
    env: dict[str, str]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.kubectl_path, *args], check=False, input=input, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    @property
    def agent_state(self) -> Path:
        return self.state / "node-agent"


@dataclass
class Kube:
    api: client.ApiClient
    core: client.CoreV1Api
    batch: client.BatchV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi
    apiext: client.ApiextensionsV1Api
    rbac: client.RbacAuthorizationV1Api


def wait_for(predicate: Callable[[], Any], timeout: float = 60, message: str = "condition", interval: float = 0.2) -> Any:
    """Poll until predicate() returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the API may answer 429/404 for a moment; keep polling
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {message}" + (f" (last error: {last_error})" if last_error else ""))


def finished_status(kube, namespace: str, name: str, timeout: float = 600) -> dict[str, Any]:
    """The status of Evaluation `name` once its phase is Succeeded or Failed."""
    from flageval.api.evaluation import GROUP, PLURAL, VERSION

    def done():
        status = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None
    return wait_for(done, timeout, f"Evaluation {name} to finish")


def results_claim(kube, namespace: str, name: str = "flageval-results") -> str:
    """A bound ReadWriteMany claim (the node agent gives each claim one host directory)."""
    kube.core.create_persistent_volume({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{name}"},
                                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                                                 "persistentVolumeReclaimPolicy": "Delete",
                                                 "hostPath": {"path": f"/tmp/{namespace}-{name}"}, "claimRef": {"namespace": namespace, "name": name}}})
    kube.core.create_namespaced_persistent_volume_claim(namespace, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                                                                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: kube.core.read_namespaced_persistent_volume_claim(name, namespace).status.phase == "Bound", 60, "PVC Bound")
    return name


def hack(script: str, *args: str, env: dict[str, str], expect: int = 0) -> str:
    """stdout of hack/<script> <args>; fails unless it exits with `expect`."""
    proc = subprocess.run([str(HACK / script), *args], check=False, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != expect:
        raise RuntimeError(f"hack/{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    state = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "FLAGEVAL_STATE": str(state)}
    hack("control-plane", "build", env=env)
    try:
        lines = dict(line.split("=", 1) for line in hack("control-plane", "up", env=env).splitlines() if "=" in line)
        env.update(lines)
        plane = ControlPlane(state, Path(lines["KUBECONFIG"]), lines["FLAGEVAL_KUBECTL"], lines["FLAGEVAL_HELM"], env)
        yield plane
    finally:
        hack("control-plane", "down", env=env)


@pytest.fixture(scope="session")
def kube(control_plane) -> Kube:
    api = config.new_client_from_config(str(control_plane.kubeconfig))
    return Kube(api, client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api),
                client.ApiextensionsV1Api(api), client.RbacAuthorizationV1Api(api))


@pytest.fixture(scope="session")
def node_agent(control_plane, kube) -> Iterator[ControlPlane]:
    hack("node-agent", "start", env=control_plane.env)
    try:
        def nodes_ready():
            nodes = kube.core.list_node().items
            ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                     and not any(t.key == "node.kubernetes.io/not-ready" for t in n.spec.taints or [])]
            return len(ready) >= 3

        wait_for(nodes_ready, 60, "three Ready nodes without the not-ready taint")
        wait_for(lambda: kube.core.read_namespaced_service_account("default", "default"), 60, "the default service account")
        yield control_plane
    finally:
        hack("node-agent", "stop", env=control_plane.env)


@pytest.fixture(scope="module")
def kueue(control_plane, kube) -> Iterator[ControlPlane]:
    """Kueue (hack/control-plane kueue) on the session's control plane for one test module: its CRDs, its
    manager, its webhooks. Stopped afterwards, webhooks first, so that other modules' Jobs do not meet them."""
    hack("control-plane", "kueue", env=control_plane.env)
    try:
        wait_for(lambda: kube.apiext.read_custom_resource_definition("workloads.kueue.x-k8s.io"), 30, "the Workload CRD")
        yield control_plane
    finally:
        hack("control-plane", "kueue-down", env=control_plane.env)


@pytest.fixture
def namespace(kube, node_agent) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: kube.core.read_namespaced_service_account("default", name), 30, f"service account in {name}")
    yield name
    kube.core.delete_namespace(name)
