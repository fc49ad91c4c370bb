"""The FlagEval client evaluates embodied services (`domain: EV`: the bundled PCA-EVAL beside ERQA and
Where2Place files in their formats) through `flageval serve`, on the local backend — one service with
20 % faulty calls, stopped mid-run and resumed — and on Evaluation objects run by the operator."""

from __future__ import annotations

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, parse_fault_rates, serve_in_thread
from flageval_client import FlagEvalClient, eval_info, ratio
from support.cluster import results_claim
from support.ev_fixtures import ev_data_on_claim, write_ev_fixtures

DATA = default_data_dir()
ACCURACY, LIMIT, CONCURRENT = 0.6, 24, 2
EV = ["pca_eval_domestic", "erqa", "where2place"]
SIZES = {"pca_eval_domestic": LIMIT, "erqa": 6, "where2place": 6}  # the two fixtures are smaller than the limit
pytestmark = pytest.mark.skipif(not (DATA / "pca_eval_domestic" / "meta_data.json").is_file(), reason="no PCA-EVAL data")


@pytest.fixture(scope="module")
def ev_data(tmp_path_factory):
    return write_ev_fixtures(tmp_path_factory.mktemp("ev") / "data", DATA / "pca_eval_domestic")


def check_results(client: FlagEvalClient, rid: str, ev_data, seeds: dict[str, int]) -> None:
    expected = {name: {ds: intended_accuracy(ds, ev_data, ACCURACY, seed, LIMIT) for ds in EV} for name, seed in seeds.items()}
    base = expected["robobrain-nvidia-origin"]
    results = client.evaldiffs(rid)["eval_results"]
    assert set(results) == set(seeds)
    for name, (entry,) in results.items():
        assert entry["status"] == "S" and [d["dataset"] for d in entry["details"]] == EV  # the EV default suite
        for detail in entry["details"]:
            ds = detail["dataset"]
            assert detail["status"] == "S" and detail["accuracy"] == expected[name][ds], (name, ds)
            assert detail["diff"] == round(expected[name][ds] - base[ds], 2)
    other = expected["robobrain-ascend"]
    assert results["robobrain-ascend"][0]["release"] is all(abs(other[ds] - base[ds]) < 0.5 for ds in EV)


def test_ev_on_the_local_backend_with_faults_stop_and_resume(start_shim, ev_data):
    answerers = [default_answerer(ev_data, ACCURACY, 5), default_answerer(ev_data, ACCURACY, 6)]
    faults = FaultPlan(parse_fault_rates("0.2"), seed=2, retry_after=0.05)
    with (serve_in_thread(answerers[0], latency=0.05) as nvidia,
          serve_in_thread(answerers[1], latency=0.05, faults=faults) as ascend):
        shim = start_shim("--limit", str(LIMIT), "--data-dir", str(ev_data))
        client = FlagEvalClient(shim.url)
        infos = [eval_info("robobrain-nvidia-origin", "robobrain", nvidia.chat_url, num_concurrent=CONCURRENT),
                 eval_info("robobrain-ascend", "robobrain", ascend.chat_url, num_concurrent=CONCURRENT, chip="Ascend-910B")]
        rid = client.evaluation(infos, "EV")["request_id"]

        def mid_pca(answer):
            return answer["running_dataset"] == "pca_eval_domestic" and 4 <= ratio(answer["running_progress"])[0] <= LIMIT // 2

        client.wait(rid, mid_pca, domain="EV")
        client.stop_evaluation(rid)
        stopped = client.wait(rid, lambda a: a["status"] == "C", timeout=30, domain="EV")
        assert not stopped["finished"] and 0 < ratio(stopped["running_progress"])[0] < LIMIT
        client.resume_evaluation(rid)
        final = client.wait(rid, lambda a: a["finished"], timeout=300, domain="EV")
        assert final["status"] == "S" and final["datasets_progress"] == f"{2 * len(EV)}/{2 * len(EV)}", final
        check_results(client, rid, ev_data, {"robobrain-nvidia-origin": 5, "robobrain-ascend": 6})
        # Every sample asked; none asked again but those in flight when stopped.
        for model in (nvidia, ascend):
            counts = model.stats()["by_key"]
            assert "unknown" not in counts and len(counts) == sum(SIZES.values())
        repeated = sum(nvidia.stats()["by_key"].values()) - sum(SIZES.values())
        assert repeated <= CONCURRENT  # one dataset at a time per service: its requests in flight
        assert sum(ascend.stats()["faults"].values()) > 0
        client.close()
    for answerer in answerers:
        assert not answerer.ev.image_faults  # every picture arrived, in its place


@pytest.mark.cluster
def test_ev_on_evaluation_objects(control_plane, kube, namespace, start_operator, start_shim):
    results_claim(kube, namespace)
    ev_data, in_runner = ev_data_on_claim(control_plane, namespace, DATA / "pca_eval_domestic")
    start_operator(namespace, data_dir=in_runner)
    answerers = [default_answerer(ev_data, ACCURACY, 5), default_answerer(ev_data, ACCURACY, 6)]
    faults = FaultPlan(parse_fault_rates("0.2"), seed=2, retry_after=0.05)
    with serve_in_thread(answerers[0]) as nvidia, serve_in_thread(answerers[1], faults=faults) as ascend:
        shim = start_shim("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--limit", str(LIMIT))
        client = FlagEvalClient(shim.url)
        infos = [eval_info("robobrain-nvidia-origin", "robobrain", nvidia.chat_url, num_concurrent=4),
                 eval_info("robobrain-ascend", "robobrain", ascend.chat_url, num_concurrent=4, chip="Ascend-910B")]
        rid = client.evaluation(infos, "EV")["request_id"]
        final = client.wait(rid, lambda a: a["finished"], timeout=400, domain="EV")
        assert final["status"] == "S", final
        check_results(client, rid, ev_data, {"robobrain-nvidia-origin": 5, "robobrain-ascend": 6})
        client.close()
    (evaluation,) = kube.custom.list_namespaced_custom_object("flageval.io", "v1alpha1", namespace, "evaluations")["items"]
    assert evaluation["spec"]["domain"] == "EV" and evaluation["status"]["phase"] == "Succeeded"
    for answerer in answerers:
        assert not answerer.ev.image_faults
