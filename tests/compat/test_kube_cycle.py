"""The same FlagEval client drives `flageval serve` on the Kubernetes backend: Evaluation objects on the
real control plane, run by the operator as Jobs on the node agent, against reference models."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info, ratio
from support.cluster import results_claim, wait_for

pytestmark = pytest.mark.cluster
DATA = default_data_dir()
ACCURACY, LIMIT, CONCURRENT = 0.7, 8, 2
G, V = "flageval.io", "v1alpha1"


def runner_results(control_plane, namespace: str, eval_model: str, dataset: str) -> dict:
    """result.json as the runner wrote it on the results volume."""
    (path,) = (control_plane.agent_state / "claims" / namespace).rglob(f"{eval_model}/{dataset}/result.json")
    return json.loads(path.read_text())


def test_full_cycle_on_evaluation_objects(control_plane, kube, namespace, start_operator, start_shim):
    secret = f"sk-kube-{uuid.uuid4().hex}"
    results_claim(kube, namespace)
    operator = start_operator(namespace)
    with (serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.05) as nvidia,
          serve_in_thread(default_answerer(DATA, ACCURACY, 6), latency=0.05, api_key=secret) as ascend,
          serve_in_thread(default_answerer(DATA, ACCURACY, 7)) as ascend_c):
        shim = start_shim("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--limit", str(LIMIT))
        client = FlagEvalClient(shim.url)
        assert client.http.get("/healthz").json()["backend"] == "kubernetes"
        infos = [
            eval_info("qwen3-8b-nvidia-origin", "qwen3-8b", nvidia.chat_url, num_concurrent=CONCURRENT),
            eval_info("qwen3-8b-ascend", "qwen3-8b", ascend.chat_url, api_key=secret, num_concurrent=CONCURRENT, chip="Ascend-910B"),
        ]
        started = client.evaluation(infos, "NLP", user_id="compat")
        rid = started["request_id"]
        assert [t["eval_model"] for t in started["eval_tasks"]] == ["qwen3-8b-nvidia-origin", "qwen3-8b-ascend"]

        # The request is an Evaluation named by the request_id; the key is in a Secret it owns.
        evaluation = kube.custom.get_namespaced_custom_object(G, V, namespace, "evaluations", rid)
        refs = [i.get("apiKeySecretRef") for i in evaluation["spec"]["evalInfos"]]
        assert refs == [None, {"name": f"{rid}-api-keys", "key": "qwen3-8b-ascend"}]
        assert evaluation["spec"]["limit"] == LIMIT and evaluation["spec"]["userId"] == "compat"
        key_secret = kube.core.read_namespaced_secret(f"{rid}-api-keys", namespace)
        assert [(o.kind, o.name, o.uid) for o in key_secret.metadata.owner_references] == [("Evaluation", rid, evaluation["metadata"]["uid"])]

        def mid_mmlu(answer):
            return answer["running_dataset"] == "mmlu" and 20 <= ratio(answer["running_progress"])[0] <= 57 * LIMIT // 2

        client.wait(rid, mid_mmlu, timeout=240)
        client.stop_evaluation(rid)
        stopped = client.wait(rid, lambda a: a["status"] == "C", timeout=60)
        assert not stopped["finished"]
        assert kube.custom.get_namespaced_custom_object(G, V, namespace, "evaluations", rid)["spec"]["suspend"] is True
        def active_pods():
            pods = kube.core.list_namespaced_pod(namespace, label_selector=f"flageval.io/evaluation={rid}").items
            return [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]

        wait_for(lambda: not active_pods(), 60, "the running runner pods gone")
        asked = nvidia.stats()["total"] + ascend.stats()["total"]
        time.sleep(2)
        assert nvidia.stats()["total"] + ascend.stats()["total"] == asked
        client.resume_evaluation(rid)
        final = client.wait(rid, lambda a: a["finished"], timeout=300)
        assert final["status"] == "S" and final["datasets_progress"] == "4/4"
        for model in (nvidia, ascend):
            counts = model.stats()["by_key"]
            assert len(counts) == LIMIT + 57 * LIMIT and "unknown" not in counts
            assert sum(counts.values()) - len(counts) <= 2 * CONCURRENT  # in flight when stopped, never a journaled one

        expected = {name: {ds: intended_accuracy(ds, DATA, ACCURACY, seed, LIMIT) for ds in ("gsm8k", "mmlu")}
                    for name, seed in (("qwen3-8b-nvidia-origin", 5), ("qwen3-8b-ascend", 6), ("qwen3-8b-ascend-c", 7))}
        results = client.evaldiffs(rid)["eval_results"]
        for name, (entry,) in results.items():
            assert entry["status"] == "S"
            for detail in entry["details"]:
                ds = detail["dataset"]
                assert detail["accuracy"] == runner_results(control_plane, namespace, name, ds)["accuracy"] == expected[name][ds]
                assert detail["diff"] == round(expected[name][ds] - expected["qwen3-8b-nvidia-origin"][ds], 2)
        ascend_diffs = [d["diff"] for d in results["qwen3-8b-ascend"][0]["details"]]
        assert results["qwen3-8b-ascend"][0]["release"] is all(abs(d) < 0.5 for d in ascend_diffs)

        rid2 = client.evaluation([eval_info("qwen3-8b-ascend-c", "qwen3-8b", ascend_c.chat_url, num_concurrent=4, chip="Ascend-910C")])["request_id"]
        assert client.wait(rid2, lambda a: a["finished"], timeout=300)["status"] == "S"
        diffs = client.evaluation_diffs([rid2, rid])["eval_diffs"]
        assert [(d["request_id"], d["eval_model"]) for d in diffs] == [(rid2, "qwen3-8b-ascend-c"), (rid, "qwen3-8b-nvidia-origin"), (rid, "qwen3-8b-ascend")]
        for entry in diffs:
            for detail in entry["details"]:
                ds, base = detail["dataset"], expected["qwen3-8b-nvidia-origin"][detail["dataset"]]
                assert detail == {"dataset": ds, "base_acc": base, "accuracy": expected[entry["eval_model"]][ds],
                                  "diff": round(expected[entry["eval_model"]][ds] - base, 2)}
        assert client.stop_evaluation(rid, check=False)["err_code"] == 1
        unknown = client.evaluation_progress("eval-000000000000", check=False)
        assert unknown["err_code"] == 1 and "unknown" in unknown["err_msg"]
        client.close()

    # The key reached the ascend service (it refuses requests without it) and nothing else.
    assert ascend.stats()["total"] > 0
    objects = kube.custom.list_namespaced_custom_object(G, V, namespace, "evaluations")
    jobs = kube.api.sanitize_for_serialization(kube.batch.list_namespaced_job(namespace))
    for text in (*client.transcript, shim.log(), operator.log(), json.dumps(objects), json.dumps(jobs)):
        assert secret not in text
