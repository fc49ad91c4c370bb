"""Fixtures for the operator's tests: the generated CRDs installed into the session's control plane."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from flageval.api.crd import CRDS
from kubernetes.client.rest import ApiException
from support.cluster import wait_for
from support.net import free_port


@pytest.fixture(scope="session")
def crds(kube):
    names = []
    for build in CRDS.values():
        crd = build()
        names.append(crd["metadata"]["name"])
        try:
            kube.apiext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = kube.apiext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            kube.apiext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    for name in names:
        wait_for(lambda name=name: any(c.type == "Established" and c.status == "True"
                             for c in kube.apiext.read_custom_resource_definition(name).status.conditions or []), 30, f"{name} established")
    return names



@dataclass
class OperatorProcess:
    proc: subprocess.Popen
    log_path: Path
    metrics_port: int
    liveness_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: str = "TERM") -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(getattr(signal, f"SIG{sig}"))
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def start_operator(control_plane, crds, tmp_path):
    """Start `flageval operator` as a subprocess watching one namespace, with FLAGEVAL_* settings (as the
    control plane's admin unless another kubeconfig is given)."""
    started: list[OperatorProcess] = []

    def start(namespace: str, kubeconfig: Path | None = None, **settings: str) -> OperatorProcess:
        metrics, liveness = free_port(), free_port()
        log_path = tmp_path / f"operator-{len(started)}.log"
        env = {**control_plane.env, "KUBECONFIG": str(kubeconfig or control_plane.kubeconfig), "FLAGEVAL_STATUS_INTERVAL": "2",
               **{f"FLAGEVAL_{k.upper()}": str(v) for k, v in settings.items()}}
        with open(log_path, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "flageval.cli", "operator", "-n", namespace, "--metrics-port", str(metrics),
                                     "--metrics-host", "127.0.0.1", "--liveness", f"http://127.0.0.1:{liveness}/healthz", "-v"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        handle = OperatorProcess(proc, log_path, metrics, liveness)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()
