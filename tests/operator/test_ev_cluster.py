"""An Evaluation with `spec.domain: EV` on the real control plane: the EV datasets in the benchmark
directory become runner Jobs, pictures reach the reference models, 20 % faulty calls change nothing, and
a suspend/resume in the middle re-sends no journaled sample."""

from __future__ import annotations

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, parse_fault_rates, serve_in_thread
from support.cluster import results_claim, wait_for
from support.ev_fixtures import ev_data_on_claim

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
ACCURACY, LIMIT = 0.6, 30
EV = ["pca_eval_domestic", "erqa", "where2place"]
SIZES = {"pca_eval_domestic": LIMIT, "erqa": 6, "where2place": 6}


def status_when(kube, namespace, name, predicate, timeout, message):
    last: list[dict] = [{}]

    def check():
        last[0] = kube.custom.get_namespaced_custom_object(G, V, namespace, P, name).get("status") or {}
        return last[0] if predicate(last[0]) else None
    try:
        return wait_for(check, timeout, message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {last[0]}") from None


def pca_done(status) -> int:
    for detail in (status.get("evalResults") or [{}])[0].get("details") or []:
        if detail.get("dataset") == "pca_eval_domestic":
            done = str(detail.get("progress", "0/")).split("/")[0]
            return int(done) if done.isdigit() else 0
    return 0


def test_ev_evaluation_with_faults_suspended_and_resumed(control_plane, kube, namespace, start_operator):
    if not (DATA / "pca_eval_domestic" / "meta_data.json").is_file():
        pytest.skip("no PCA-EVAL data")
    results_claim(kube, namespace)
    data, in_runner = ev_data_on_claim(control_plane, namespace, DATA / "pca_eval_domestic")
    start_operator(namespace, data_dir=in_runner)
    answerers = [default_answerer(data, ACCURACY, 5), default_answerer(data, ACCURACY, 6)]
    faults = FaultPlan(parse_fault_rates("0.2"), seed=4, retry_after=0.05)
    with (serve_in_thread(answerers[0], latency=0.5) as nvidia,
          serve_in_thread(answerers[1], latency=0.02, faults=faults) as ascend):
        body = {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "robot"},
                "spec": {"domain": "EV", "limit": LIMIT, "evalInfos": [
                    {"evalModel": "robot-nvidia-origin", "model": "robobrain", "evalUrl": nvidia.chat_url},
                    {"evalModel": "robot-ascend", "model": "robobrain", "evalUrl": ascend.chat_url, "chip": "Ascend-910B",
                     "numConcurrent": 4}]}}
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)
        status_when(kube, namespace, "robot", lambda s: 5 <= pca_done(s) < LIMIT, 180, "PCA-EVAL under way")
        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "robot", {"spec": {"suspend": True}})
        status_when(kube, namespace, "robot", lambda s: s.get("phase") == "Suspended", 60, "phase Suspended")
        def running_pods():
            pods = kube.core.list_namespaced_pod(namespace, label_selector="flageval.io/evaluation=robot").items
            return [p for p in pods if p.status.phase in ("Pending", "Running")]
        wait_for(lambda: not running_pods(), 60, "running runner pods gone")  # finished Jobs keep theirs
        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "robot", {"spec": {"suspend": False}})
        status = status_when(kube, namespace, "robot", lambda s: s.get("phase") in ("Succeeded", "Failed"), 300,
                             "the run to finish")
        counts = nvidia.stats()["by_key"]
    assert status["phase"] == "Succeeded", status
    base, other = ({d["dataset"]: d for d in r["details"]} for r in status["evalResults"])
    assert sorted(base) == sorted(EV)  # the EV default suite: every EV dataset in the directory
    for ds in EV:
        want_base = intended_accuracy(ds, data, ACCURACY, 5, LIMIT)
        want_other = intended_accuracy(ds, data, ACCURACY, 6, LIMIT)
        assert base[ds]["accuracy"] == want_base and other[ds]["accuracy"] == want_other, ds
        assert other[ds]["diff"] == round(want_other - want_base, 2)
        assert base[ds]["progress"] == f"{SIZES[ds]}/{SIZES[ds]}"
    # Resume re-sent nothing journaled: at most the request in flight per Job (numConcurrent 1) at SIGTERM.
    assert len(counts) == sum(SIZES.values())
    assert sum(counts.values()) - len(counts) <= len(EV)
    assert not any(a.ev.image_faults for a in answerers)
