"""`make cluster-up` / `cluster-down` as a developer uses them: `up` twice changes nothing, `down`
leaves no process and no port behind — the control plane's, the node agent's, or a pod's.

A second, private control plane in its own state directory, so the session's stays untouched.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config
from support.cluster import HACK, hack, wait_for

pytestmark = pytest.mark.cluster

PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def pids(state: Path) -> dict[str, int]:
    return {name: int((state / f"{name}.pid").read_text()) for name in (*PLANE, "node-agent")
            if (state / f"{name}.pid").exists()}


def running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; only its parent's wait is missing


def listening_ports(pid: int) -> set[int]:
    """Ports given on the command line (etcd's client and peer URLs, the API server's secure port)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", cmdline)}
    ports |= {int(p) for p in re.findall(r"--secure-port (\d+)", cmdline) if p != "0"}
    return ports


def port_free(port: int) -> bool:
    """Nothing listens on it: a server could bind it now (connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def private_state(control_plane, tmp_path):
    """A state directory of its own; whatever the test leaves running there is stopped afterwards."""
    state = tmp_path / "state"
    env = {**os.environ, "FLAGEVAL_STATE": str(state)}
    env.pop("KUBECONFIG", None)
    try:
        yield state, env
    finally:  # a no-op when the test got as far as its own `down`
        for script, command in (("node-agent", "stop"), ("control-plane", "down")):
            subprocess.run([str(HACK / script), command], check=False, capture_output=True, env={**env, "KUBECONFIG": str(state / "kubeconfig")}, timeout=120)


def test_up_is_idempotent_and_down_leaves_nothing_behind(private_state, tmp_path):
    state, env = private_state
    first = hack("control-plane", "up", env=env)
    assert f"KUBECONFIG={state}/kubeconfig" in first.splitlines()
    started = pids(state)
    assert set(started) == set(PLANE)
    ports = set().union(*(listening_ports(pid) for pid in started.values()))
    assert len(ports) >= 3, ports  # etcd client + peer, API server

    assert hack("control-plane", "up", env=env) == first
    assert pids(state) == started, "a second `up` must keep the running processes"
    assert hack("control-plane", "status", env=env).strip() == "running"

    # The node agent and one pod process, so that `down` has children to take with it.
    env["KUBECONFIG"] = str(state / "kubeconfig")
    hack("node-agent", "start", env=env)
    agent = pids(state)["node-agent"]
    assert "running" in hack("node-agent", "start", env=env) and pids(state)["node-agent"] == agent
    pod_pid_file = tmp_path / "pod.pid"
    core = client.CoreV1Api(config.new_client_from_config(str(state / "kubeconfig")))
    wait_for(lambda: core.read_namespaced_service_account("default", "default"), 60, "the default service account")
    script = f"import os, time; open({str(pod_pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "main", "image": "busybox", "command": [sys.executable, "-c", script]}]}})
    pod_pid = int(wait_for(lambda: pod_pid_file.exists() and pod_pid_file.read_text(), 60, "the pod's process"))
    assert running(pod_pid)

    hack("node-agent", "stop", env=env)
    hack("control-plane", "down", env=env)

    deadline = time.monotonic() + 10  # a process may still be reaped by init a moment after `down` returns
    left = [pid for pid in (*started.values(), agent, pod_pid) if running(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if running(pid)]
    assert not left, f"processes left after down: {left}"
    assert not pids(state), "pid files left after down"
    busy = [port for port in ports if not port_free(port)]
    assert not busy, f"ports still bound after down: {busy}"
    assert hack("control-plane", "status", env=env, expect=1).strip() == "stopped"
