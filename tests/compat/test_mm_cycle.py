"""The FlagEval client evaluates vision-language services (`domain: MM`, MathVision with its pictures)
through `flageval serve`, on the local backend and on Evaluation objects run by the operator."""

from __future__ import annotations

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info
from support.cluster import results_claim

DATA = default_data_dir()
ACCURACY, LIMIT = 0.6, 12
pytestmark = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")


def mm_cycle(client: FlagEvalClient, nvidia, other, answerers) -> None:
    """Two services on the MM domain's default suite: progress by domain, accuracies, diffs, release."""
    infos = [eval_info("qwen-vl-nvidia-origin", "qwen-vl", nvidia.chat_url, num_concurrent=4),
             eval_info("qwen-vl-ascend", "qwen-vl", other.chat_url, num_concurrent=4, chip="Ascend-910B")]
    started = client.evaluation(infos, "MM")
    rid = started["request_id"]
    final = client.wait(rid, lambda a: a["finished"], timeout=300, domain="MM")
    assert final["status"] == "S" and final["datasets_progress"] == "2/2", final  # one dataset, two services
    # A domain that is not the evaluation's is refused with the reason.
    wrong = client.evaluation_progress(rid, "NLP", check=False)
    assert wrong["err_code"] == 1 and "MM" in wrong["err_msg"]

    expected = {"qwen-vl-nvidia-origin": intended_accuracy("mathvision", DATA, ACCURACY, 5, LIMIT),
                "qwen-vl-ascend": intended_accuracy("mathvision", DATA, ACCURACY, 6, LIMIT)}
    assert expected["qwen-vl-nvidia-origin"] != expected["qwen-vl-ascend"]  # the diff is not trivially zero
    results = client.evaldiffs(rid)["eval_results"]
    for name, (entry,) in results.items():
        (detail,) = entry["details"]
        assert detail["dataset"] == "mathvision" and detail["status"] == "S"
        assert detail["accuracy"] == expected[name]
        assert detail["diff"] == round(expected[name] - expected["qwen-vl-nvidia-origin"], 2)
    assert results["qwen-vl-ascend"][0]["release"] is (abs(expected["qwen-vl-ascend"] - expected["qwen-vl-nvidia-origin"]) < 0.5)
    diffs = client.evaluation_diffs([rid])["eval_diffs"]
    ascend = next(d for d in diffs if d["eval_model"] == "qwen-vl-ascend")
    documented = [{k: d[k] for k in ("dataset", "base_acc", "accuracy", "diff")} for d in ascend["details"]]
    assert documented == [{"dataset": "mathvision", "base_acc": expected["qwen-vl-nvidia-origin"],
                           "accuracy": expected["qwen-vl-ascend"], "diff": round(expected["qwen-vl-ascend"] - expected["qwen-vl-nvidia-origin"], 2)}]
    assert ascend["details"][0]["p_value"] is not None  # extension: paired with the baseline
    for answerer in answerers:
        assert not answerer.mathvision.image_faults  # every picture arrived, in its place


def test_mm_on_the_local_backend(start_shim):
    answerers = [default_answerer(DATA, ACCURACY, 5), default_answerer(DATA, ACCURACY, 6)]
    with serve_in_thread(answerers[0]) as nvidia, serve_in_thread(answerers[1]) as other:
        shim = start_shim("--limit", str(LIMIT))
        client = FlagEvalClient(shim.url)
        mm_cycle(client, nvidia, other, answerers)
        client.close()


@pytest.mark.cluster
def test_mm_on_evaluation_objects(control_plane, kube, namespace, start_operator, start_shim):
    results_claim(kube, namespace)
    start_operator(namespace)
    answerers = [default_answerer(DATA, ACCURACY, 5), default_answerer(DATA, ACCURACY, 6)]
    with serve_in_thread(answerers[0]) as nvidia, serve_in_thread(answerers[1]) as other:
        shim = start_shim("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--limit", str(LIMIT))
        client = FlagEvalClient(shim.url)
        mm_cycle(client, nvidia, other, answerers)
        client.close()
    (evaluation,) = kube.custom.list_namespaced_custom_object("flageval.io", "v1alpha1", namespace, "evaluations")["items"]
    assert evaluation["spec"]["domain"] == "MM" and evaluation["status"]["phase"] == "Succeeded"
