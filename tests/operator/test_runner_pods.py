"""Runner pods on the node agent as a container runtime would run them: each with its own /metrics port
while several share a node, and from a checkout that lives under /tmp (where their emptyDir is mounted)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from support.cluster import finished_status, results_claim, wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
CHECKOUT = Path(__file__).resolve().parents[2]
PORTS = "node-agent.flageval.io/ports"


def test_runners_sharing_a_node_each_serve_metrics_on_a_port_of_their_own(control_plane, kube, namespace, start_operator):
    results_claim(kube, namespace)
    start_operator(namespace)  # every runner asks for the same containerPort (runner.metricsPort, 9091)
    limit = 40
    with serve_in_thread(default_answerer(DATA, 0.7, 1), latency=0.25) as one, serve_in_thread(default_answerer(DATA, 0.7, 2), latency=0.25) as two:
        infos = [{"evalModel": f"m{i}-nvidia-origin" if i == 1 else f"m{i}", "model": "qwen3", "evalUrl": url.chat_url, "baseModelName": "q"}
                 for i, url in ((1, one), (2, two))]
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, {
            "apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "ports"},
            "spec": {"datasets": ["gsm8k"], "limit": limit, "evalInfos": infos}})

        def both_running():
            pods = kube.core.list_namespaced_pod(namespace, label_selector="flageval.io/evaluation=ports").items
            running = [p for p in pods if p.status.phase == "Running" and PORTS in (p.metadata.annotations or {})]
            return running if len(running) == 2 else None
        pods = wait_for(both_running, 120, "two runner pods running")
        assert pods[0].spec.node_name == pods[1].spec.node_name == "node-nvidia-bj"
        assert [c.ports[0].container_port for p in pods for c in p.spec.containers] == [9091, 9091]
        ports = [json.loads(p.metadata.annotations[PORTS])["runner/metrics"] for p in pods]
        assert ports[0] != ports[1], ports

        def served(port):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return text if "flageval_engine_requests_total" in text else None
        texts = [wait_for(lambda port=port: served(port), 30, f"/metrics on {port}") for port in ports]
        status = finished_status(kube, namespace, "ports", 180)
    assert all(t.startswith("# HELP") for t in texts)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert [r["details"][0]["accuracy"] for r in status["evalResults"]] == [intended_accuracy("gsm8k", DATA, 0.7, seed, limit) for seed in (1, 2)]
    for pod in pods:
        log = (control_plane.agent_state / "pods" / f"{namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}" / "logs" / "runner.log").read_text()
        assert "no /metrics" not in log and "Address already in use" not in log, log


def clone_under_tmp(tmp_path: Path) -> Path:
    """A clone of this checkout under /tmp with a virtualenv of its own: the clone's package first, the
    installed dependencies of this checkout's virtualenv after it (what `make install` would download)."""
    assert str(tmp_path).startswith("/tmp/"), tmp_path
    clone = tmp_path / "flageval-operator"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(CHECKOUT), str(clone)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True, timeout=120)
    site = Path(subprocess.run([str(clone / ".venv/bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "checkout.pth").write_text(f"{clone / 'operator'}\n{sysconfig.get_paths()['purelib']}\n")
    entry = clone / ".venv/bin/flageval"
    entry.write_text(f"#!{clone / '.venv/bin/python'}\nimport sys\nfrom flageval.cli import main\nsys.exit(main())\n")
    entry.chmod(0o755)
    return clone


def test_a_clone_under_tmp_runs_its_runner_pods_despite_their_emptydir_at_tmp(control_plane, kube, namespace, start_operator, tmp_path):
    """The runner Job mounts an emptyDir at /tmp; a node agent run from a clone under /tmp must still find
    the clone's virtualenv inside that mount (it binds its own install back in)."""
    clone = clone_under_tmp(tmp_path)
    vendor = f"clone{namespace[2:]}"  # a node of its own: the session's agent does not serve this vendor
    node = f"node-{vendor}"
    env = {**control_plane.env, "KUBECONFIG": str(control_plane.kubeconfig), "FLAGEVAL_NODES": json.dumps([{"name": node, "vendor": vendor, "chip": "Clone-1", "region": "bj"}]),
           "FLAGEVAL_DATA_DIR": str(DATA)}  # the clone has no ../shared beside it; the pods read DATA, which may lie under /tmp too
    log_path = tmp_path / "agent.log"
    with open(log_path, "w") as out:
        agent = subprocess.Popen([str(clone / ".venv/bin/python"), str(clone / "hack/node_agent.py"), "--state", str(tmp_path / "agent")],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=clone)
    try:
        wait_for(lambda: any(c.type == "Ready" and c.status == "True" for c in kube.core.read_node(node).status.conditions or []), 60, "the clone's node")
        results_claim(kube, namespace)
        start_operator(namespace, data_dir=str(DATA))
        with serve_in_thread(default_answerer(DATA, 0.7, 4)) as model:
            kube.custom.create_namespaced_custom_object(G, V, namespace, P, {
                "apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "clone"},
                "spec": {"datasets": ["gsm8k"], "limit": 5, "evalInfos": [
                    {"evalModel": "clone-nvidia-origin", "model": "qwen3", "evalUrl": model.chat_url, "chip": f"{vendor.capitalize()}-1"}]}})
            status = finished_status(kube, namespace, "clone", 120)
        pods = kube.core.list_namespaced_pod(namespace, label_selector="flageval.io/evaluation=clone").items
        logs = [(tmp_path / "agent" / "pods" / f"{namespace}_{p.metadata.name}_{p.metadata.uid[:8]}" / "logs" / "runner.log").read_text() for p in pods]
        assert pods and all(p.spec.node_name == node for p in pods)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1) + "\n".join(logs)
        assert status["evalResults"][0]["details"][0]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 4, 5)
        assert all("not found" not in log for log in logs), logs
        assert any(m.mount_path == "/tmp" for p in pods for m in p.spec.containers[0].volume_mounts)
    finally:
        agent.terminate()
        agent.wait(30)
        kube.core.delete_node(node)
