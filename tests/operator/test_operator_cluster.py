"""`flageval operator` on the real control plane with runner Jobs on the node agent and mock model servers."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes import client

from conftest import results_claim
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from support.cluster import wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
ACCURACY = 0.7
SECRET = "sk-do-not-leak-4711"


def get(kube, namespace, name):
    return kube.custom.get_namespaced_custom_object(G, V, namespace, P, name)


def phase(kube, namespace, name):
    return (get(kube, namespace, name).get("status") or {}).get("phase")


def events(kube, namespace, name):
    return [e for e in kube.core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def test_evaluation_runs_on_matching_nodes_and_reports_accuracy_diffs_and_release(control_plane, kube, namespace, start_operator):
    results_claim(kube, namespace)
    kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="keys"), string_data={"ascend": SECRET}))
    operator = start_operator(namespace)
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5)) as nvidia, serve_in_thread(default_answerer(DATA, ACCURACY, 6)) as ascend:
        body = {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "qwen3"},
                "spec": {"domain": "NLP", "datasets": ["gsm8k", "mmlu"], "limit": 20, "evalInfos": [
                    {"evalModel": "qwen3-nvidia-origin", "model": "qwen3", "evalUrl": nvidia.chat_url, "baseModelName": "Qwen3-8B", "numConcurrent": 4},
                    {"evalModel": "qwen3-ascend", "model": "qwen3", "evalUrl": ascend.chat_url, "chip": "Ascend-910B", "baseModelName": "Qwen3-8B",
                     "numConcurrent": 4, "apiKeySecretRef": {"name": "keys", "key": "ascend"}}]}}
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
        wait_for(lambda: phase(kube, namespace, "qwen3") in ("Succeeded", "Failed"), 300, "the Evaluation to finish")

    ev = get(kube, namespace, "qwen3")
    status = ev["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["progress"] == "4/4" and status["observedGeneration"] == ev["metadata"]["generation"]

    jobs = kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=qwen3").items
    assert len(jobs) == 4
    for job in jobs:
        pods = kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
        vendor = job.metadata.labels["flageval.io/chip-vendor"]
        assert pods and all(p.spec.node_name == f"node-{vendor}-bj" for p in pods)
        assert job.metadata.owner_references[0].name == "qwen3"

    limit = 20
    base = {d["dataset"]: d for d in status["evalResults"][0]["details"]}
    other = {d["dataset"]: d for d in status["evalResults"][1]["details"]}
    assert [r["evalModel"] for r in status["evalResults"]] == ["qwen3-nvidia-origin", "qwen3-ascend"]
    for dataset in ("gsm8k", "mmlu"):
        expect_base = intended_accuracy(dataset, DATA, ACCURACY, 5, limit)
        expect_other = intended_accuracy(dataset, DATA, ACCURACY, 6, limit)
        assert base[dataset]["status"] == other[dataset]["status"] == "S"
        assert base[dataset]["accuracy"] == expect_base and base[dataset]["diff"] == 0
        assert other[dataset]["accuracy"] == expect_other and other[dataset]["baseAccuracy"] == expect_base
        assert other[dataset]["diff"] == round(expect_other - expect_base, 2)
    assert base["gsm8k"]["progress"] == f"{limit}/{limit}" and base["mmlu"]["progress"] == f"{57 * limit}/{57 * limit}"
    releases = [all(abs(d["diff"]) < 0.5 for d in r["details"]) for r in status["evalResults"]]
    assert [r["release"] for r in status["evalResults"]] == releases and status["release"] is all(releases)
    assert status["evalResults"][0]["release"] is True and status["evalResults"][1]["datasetsProgress"] == "2/2"

    table = control_plane.kubectl("get", "feval", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "DOMAIN", "PHASE", "PROGRESS", "RELEASE", "AGE"]
    assert table[6:11] == ["qwen3", "NLP", "Succeeded", "4/4", str(status["release"]).lower()]

    reasons = [e.reason for e in events(kube, namespace, "qwen3")]
    assert "Started" in reasons and "Finished" in reasons
    # The key reached the runner through the Secret only.
    texts = [operator.log(), json.dumps(ev), json.dumps([e.message for e in kube.core.list_namespaced_event(namespace).items]),
             json.dumps(client.ApiClient().sanitize_for_serialization(jobs))]
    assert all(SECRET not in text for text in texts)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert "flageval_jobs_created_total 4.0" in metrics and 'flageval_evaluations{phase="Succeeded"} 1.0' in metrics
    assert urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5).status == 200
