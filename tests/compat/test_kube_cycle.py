"""The same FlagEval client drives `flageval serve` on the Kubernetes backend: Evaluation objects on the
real control plane, run by the operator as Jobs on the node agent, against reference models."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval_client import FlagEvalClient, eval_info, ratio
from support.cluster import results_claim, wait_for
from support.secrets import cluster_texts, places_holding

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
                documented = {k: detail[k] for k in ("dataset", "base_acc", "accuracy", "diff")}
                assert documented == {"dataset": ds, "base_acc": base, "accuracy": expected[entry["eval_model"]][ds],
                                      "diff": round(expected[entry["eval_model"]][ds] - base, 2)}
                # extension: the status's paired counts, where its baseline is the one compared with (same Evaluation)
                paired = entry["eval_model"] == "qwen3-8b-ascend"
                assert (detail["p_value"] is not None) is paired
                if paired:
                    assert sum(detail[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")) > 0
        assert client.stop_evaluation(rid, check=False)["err_code"] == 1
        unknown = client.evaluation_progress("eval-000000000000", check=False)
        assert unknown["err_code"] == 1 and "unknown" in unknown["err_msg"]
        client.close()

    # The key reached the ascend service (it refuses requests without it) and nothing else.
    assert ascend.stats()["total"] > 0
    found, read = places_holding(secret, run_texts(kube, namespace, client, shim, operator), [control_plane.agent_state])
    assert not found and read > 0, f"the API key is in {found}"


def run_texts(kube, namespace, client, shim, operator) -> dict[str, str]:
    """What a run through the REST API left outside files: answers, logs, the namespace's objects."""
    return {**{f"answer #{i}": t for i, t in enumerate(client.transcript)}, "shim log": shim.log(), "operator log": operator.log(),
            **cluster_texts(kube, namespace)}


def test_a_key_the_endpoint_quotes_back_reaches_no_object_log_or_file(control_plane, kube, namespace, start_operator, start_shim):
    """The service quotes the Authorization header in its error bodies; half the attempts fail, with one
    attempt per sample, so errors (with the quoted header) reach journals, results, the runner's log,
    the task result, the Evaluation's status and its Failed Event. The key is in none of them, nor
    anywhere on the node agent's disk (pod logs, the results volume, the response cache)."""
    key = f"sk-quoted-{uuid.uuid4()}"
    results_claim(kube, namespace)
    operator = start_operator(namespace, backoff_limit="0")
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), api_key=key, echo_auth=True, faults=FaultPlan({"500": 0.5}, seed=2)) as model:
        shim = start_shim("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--limit", "30")
        client = FlagEvalClient(shim.url)
        body = {"eval_infos": [eval_info("q-nvidia-origin", "qwen3", model.chat_url, api_key=key, num_retry=1, num_concurrent=2)],
                "domain": "NLP", "datasets": ["gsm8k"]}
        rid = client.call("POST", "/evaluation", body)["request_id"]
        final = client.wait(rid, lambda a: a["finished"], timeout=240)
        assert final["status"] == "OOR" and model.stats()["faults"]["500"] > 0, final
        client.evaldiffs(rid, check=False)
        client.close()
        wait_for(lambda: [e for e in kube.core.list_namespaced_event(namespace).items if e.reason == "Failed"], 30, "the Failed Event")
    texts = run_texts(kube, namespace, client, shim, operator)
    found, read = places_holding(key, texts, [control_plane.agent_state])
    assert not found and read > 0, f"the API key is in {found}"
    redacted, _ = places_holding("Authorization: Bearer [redacted]", texts, [control_plane.agent_state])
    assert {"Evaluations", "EvaluationTaskResults", "Events"} <= set(redacted), redacted  # the quoted errors got there
    assert any(p.endswith("journal.jsonl") for p in redacted) and any(p.endswith(".log") for p in redacted), redacted
