"""A control-plane outage in the middle of four runs: etcd and kube-apiserver stopped for 30 s, then started
again with the same ports and data. On a private control plane (the session's stays untouched)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest
from compat.shim_process import launch_shim
from flageval.api.crd import CRDS
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from kubernetes import client, config
from support.cluster import HACK, Kube, hack, results_claim, wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
OUTAGE_SECONDS = 30
LIMIT = 120
LATENCY = 0.4  # s per answer at one request at a time: each run takes ≈ 50 s, so all four span the outage
SEEDS = (21, 22, 23, 24)


@pytest.fixture
def private_plane(control_plane, tmp_path):
    """A control plane, node agent and CRDs of this test's own; stopped afterwards whatever happened."""
    state = tmp_path / "plane"
    env = {**os.environ, "FLAGEVAL_STATE": str(state)}
    env.pop("KUBECONFIG", None)
    try:
        hack("control-plane", "up", env=env)
        env["KUBECONFIG"] = str(state / "kubeconfig")
        hack("node-agent", "start", env=env)
        api = config.new_client_from_config(env["KUBECONFIG"])
        kube = Kube(api, client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api),
                    client.ApiextensionsV1Api(api), client.RbacAuthorizationV1Api(api))
        for build in CRDS.values():
            kube.apiext.create_custom_resource_definition(build())
        for build in CRDS.values():
            name = build()["metadata"]["name"]
            wait_for(lambda name=name: any(c.type == "Established" and c.status == "True"
                                           for c in kube.apiext.read_custom_resource_definition(name).status.conditions or []), 30, name)
        kube.core.create_namespace({"metadata": {"name": "outage"}})
        wait_for(lambda: kube.core.read_namespaced_service_account("default", "outage"), 60, "the namespace's default ServiceAccount")
        results_claim(kube, "outage")
        yield state, env, kube
    finally:
        for script, command in (("node-agent", "stop"), ("control-plane", "down")):
            subprocess.run([str(HACK / script), command], check=False, capture_output=True, env={**env, "KUBECONFIG": str(state / "kubeconfig")}, timeout=120)


def test_runs_survive_a_control_plane_outage_with_nothing_lost_or_repeated(private_plane, start_operator, tmp_path):
    state, env, kube = private_plane
    operator = start_operator("outage", kubeconfig=state / "kubeconfig")
    mocks = [serve_in_thread(default_answerer(DATA, 0.7, seed), latency=LATENCY) for seed in SEEDS]
    models = [m.__enter__() for m in mocks]
    shim = None
    try:
        shim = launch_shim(tmp_path / "shim", tmp_path / "shim.log", "--kubeconfig", str(state / "kubeconfig"), "--namespace", "outage",
                           "--limit", str(LIMIT), timeout=120)  # a loaded machine starts it slowly
        http = httpx.Client(base_url=shim.url, timeout=30)
        infos = [{"eval_model": "o-nvidia-origin" if i == 0 else f"o-{i}", "model": "qwen3", "eval_url": m.chat_url, "num_concurrent": 1}
                 for i, m in enumerate(models)]
        started = http.post("/evaluation", json={"eval_infos": infos, "domain": "NLP", "datasets": ["gsm8k"]}).json()
        assert started["err_code"] == 0, started
        rid = started["request_id"]

        def progress() -> dict:
            return http.post("/evaluation_progress", json={"request_id": rid}).json()

        wait_for(lambda: all(m.stats()["total"] >= 5 for m in models), 180, "four runners evaluating")
        before = [m.stats()["total"] for m in models]

        hack("control-plane", "stop-api", env=env)
        outage_started = time.monotonic()
        answers = []
        while time.monotonic() - outage_started < OUTAGE_SECONDS:
            response = http.post("/evaluation_progress", json={"request_id": rid})
            answers.append((response.status_code, response.json()))
            time.sleep(1)
        during = [m.stats()["total"] for m in models]
        hack("control-plane", "start-api", env=env)

        # The REST API answered throughout, with its error envelope once its cached view had expired.
        assert {code for code, _ in answers} == {200}, answers
        refused = [a for _, a in answers if a["err_code"] == 1]
        assert refused and all("cannot reach the Kubernetes API" in a["err_msg"] for a in refused), answers
        # The runners went on evaluating while the API server was away.
        assert all(d > b for d, b in zip(during, before)), (before, during)

        def finished():
            status = kube.custom.get_namespaced_custom_object(G, V, "outage", P, rid).get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None
        status = wait_for(finished, 300, "the Evaluation to finish after the outage")
        final = progress()
    finally:
        if shim is not None:
            shim.stop()
        for m in mocks:
            m.__exit__(None, None, None)

    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    accuracies = [r["details"][0]["accuracy"] for r in status["evalResults"]]
    assert accuracies == [intended_accuracy("gsm8k", DATA, 0.7, seed, LIMIT) for seed in SEEDS]
    assert all(r["details"][0]["status"] == "S" and r["details"][0]["progress"] == f"{LIMIT}/{LIMIT}" for r in status["evalResults"])
    assert final["err_code"] == 0 and final["finished"] is True, final
    # No sample lost, none asked twice: every question reached its model exactly once.
    for model in models:
        counts = model.stats()["by_key"]
        assert len(counts) == LIMIT and set(counts.values()) == {1}, sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    # No Job duplicated, no runner re-run: four Jobs, one pod each, each Complete.
    jobs = kube.batch.list_namespaced_job("outage", label_selector=f"flageval.io/evaluation={rid}").items
    assert len(jobs) == 4 and all(j.status.succeeded == 1 and not j.status.failed for j in jobs)
    pods = kube.core.list_namespaced_pod("outage", label_selector=f"flageval.io/evaluation={rid}").items
    assert len(pods) == 4
    logs = [(state / "node-agent" / "pods" / f"outage_{p.metadata.name}_{p.metadata.uid[:8]}" / "logs" / "runner.log").read_text() for p in pods]
    assert all("retrying" in log for log in logs), logs  # each runner met the outage and retried its report
    assert operator.proc.poll() is None  # the operator rode it out and reconnected: it wrote the final status
    print(f"requests before the outage {before}, at its end {during}; REST answers during it: {len(answers)}, {len(refused)} with err_code 1")
