"""`flageval operator` in Kueue mode on the real control plane with Kueue (hack/control-plane kueue), runner
Jobs on the node agent and mock model servers: Kueue's quota per chip flavor decides what runs."""

from __future__ import annotations

import time

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from support.cluster import results_claim, wait_for

pytestmark = pytest.mark.cluster
RUNNER_JOBS = "flageval.io/evaluation"  # runner Jobs only (not the report Job written after an Evaluation ends)
G, V, P = "flageval.io", "v1alpha1", "evaluations"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
DATA = default_data_dir()
ACCURACY = 0.7


def get(kube, namespace, name):
    return kube.custom.get_namespaced_custom_object(G, V, namespace, P, name)


def finished(job) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])


@pytest.fixture
def chip_queue(kube, kueue, namespace):
    """examples/kueue/ in small: flavors nvidia-bj and ascend-bj, a ClusterQueue with room for one NVIDIA
    runner and two Ascend runners, and the LocalQueue `flageval` in `namespace`."""
    cq = f"chips-{namespace}"
    flavors = {"nvidia": f"nvidia-bj-{namespace}", "ascend": f"ascend-bj-{namespace}"}
    for vendor, flavor in flavors.items():
        kube.custom.create_cluster_custom_object(*KUEUE, "resourceflavors", {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": flavor},
            "spec": {"nodeLabels": {"flageval.io/chip-vendor": vendor, "flageval.io/region": "bj"}}})
    kube.custom.create_cluster_custom_object(*KUEUE, "clusterqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": cq},
        "spec": {"namespaceSelector": {}, "queueingStrategy": "BestEffortFIFO", "resourceGroups": [{
            "coveredResources": ["pods", "cpu", "memory"], "flavors": [
                {"name": flavors["nvidia"], "resources": [{"name": "pods", "nominalQuota": 1}, {"name": "cpu", "nominalQuota": 4},
                                                          {"name": "memory", "nominalQuota": "16Gi"}]},
                {"name": flavors["ascend"], "resources": [{"name": "pods", "nominalQuota": 2}, {"name": "cpu", "nominalQuota": 4},
                                                          {"name": "memory", "nominalQuota": "16Gi"}]}]}]}})
    kube.custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "flageval"}, "spec": {"clusterQueue": cq}})
    yield cq
    kube.custom.delete_namespaced_custom_object(*KUEUE, namespace, "localqueues", "flageval")
    kube.custom.delete_cluster_custom_object(*KUEUE, "clusterqueues", cq)
    for flavor in flavors.values():
        kube.custom.delete_cluster_custom_object(*KUEUE, "resourceflavors", flavor)


def service(name, url, chip=None):
    return {"evalModel": name, "model": "qwen3", "evalUrl": url, "numConcurrent": 2, **({"chip": chip} if chip else {})}


def test_one_nvidia_runner_at_a_time_under_the_quota_and_ascend_runs_beside(kube, namespace, start_operator, chip_queue):
    results_claim(kube, namespace)
    start_operator(namespace, kueue_enabled="true")
    limit = 3
    with (serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.05) as nvidia_a,
          serve_in_thread(default_answerer(DATA, ACCURACY, 6), latency=0.05) as ascend_a,
          serve_in_thread(default_answerer(DATA, ACCURACY, 7), latency=0.05) as nvidia_b):
        specs = {"ka": [service("ka-nvidia-origin", nvidia_a.chat_url), service("ka-ascend", ascend_a.chat_url, "Ascend-910B")],
                 "kb": [service("kb-nvidia-origin", nvidia_b.chat_url)]}
        for name, infos in specs.items():
            kube.custom.create_namespaced_custom_object(G, V, namespace, P, {
                "apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
                "spec": {"datasets": ["gsm8k", "mmlu"], "limit": limit, "evalInfos": infos}})
        most_nvidia, ascend_beside_waiting_nvidia, messages = 0, False, set()
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline:
            jobs = kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items
            unfinished = [j for j in jobs if not finished(j)]
            admitted = {v: [j for j in unfinished if j.metadata.labels["flageval.io/chip-vendor"] == v and not j.spec.suspend] for v in ("nvidia", "ascend")}
            waiting_nvidia = [j for j in unfinished if j.metadata.labels["flageval.io/chip-vendor"] == "nvidia" and j.spec.suspend]
            most_nvidia = max(most_nvidia, len(admitted["nvidia"]))
            assert len(admitted["nvidia"]) <= 1, [j.metadata.name for j in admitted["nvidia"]]
            ascend_beside_waiting_nvidia |= bool(admitted["ascend"] and waiting_nvidia)
            statuses = {name: get(kube, namespace, name).get("status") or {} for name in specs}
            messages |= {d.get("message", "") for s in statuses.values() for r in s.get("evalResults") or [] for d in r["details"] if d["status"] == "P"}
            if len(jobs) == 6 and all(s.get("phase") in ("Succeeded", "Failed") for s in statuses.values()):
                break
            time.sleep(0.3)
    assert {name: s.get("phase") for name, s in statuses.items()} == {"ka": "Succeeded", "kb": "Succeeded"}, statuses
    for name, seeds in (("ka", (5, 6)), ("kb", (7,))):
        for result, seed in zip(statuses[name]["evalResults"], seeds, strict=True):
            assert {d["dataset"]: d["accuracy"] for d in result["details"]} == {
                dataset: intended_accuracy(dataset, DATA, ACCURACY, seed, limit) for dataset in ("gsm8k", "mmlu")}
    assert most_nvidia == 1
    assert ascend_beside_waiting_nvidia  # the NVIDIA quota held no Ascend runner back
    quoted = [m for m in messages if m.startswith(f"waiting for Kueue admission in ClusterQueue {chip_queue}")]
    assert any(f"nvidia-bj-{namespace}" in m and "insufficient unused quota for pods" in m for m in quoted), messages
    jobs = kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items
    assert all(j.metadata.labels["kueue.x-k8s.io/queue-name"] == "flageval" for j in jobs)


def test_suspend_and_resume_through_the_workload_under_kueue(kube, namespace, start_operator, chip_queue):
    results_claim(kube, namespace)
    start_operator(namespace, kueue_enabled="true")
    limit = 120
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.05) as model:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, {
            "apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "slow"},
            "spec": {"datasets": ["gsm8k"], "limit": limit, "evalInfos": [{**service("slow-nvidia-origin", model.chat_url), "numConcurrent": 1}]}})

        def status_when(predicate, timeout, what):
            def check():
                status = get(kube, namespace, "slow").get("status") or {}
                return status if predicate(status) else None
            return wait_for(check, timeout, what)

        def progressed(status):
            done = (status.get("evalResults") or [{}])[0].get("runningProgress", "0/").split("/")[0]
            return status.get("phase") == "Running" and done.isdigit() and int(done) >= 20
        status_when(progressed, 180, "20 samples done")

        def workload():
            (found,) = kube.custom.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
            return found

        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "slow", {"spec": {"suspend": True}})
        status = status_when(lambda s: s.get("phase") == "Suspended" and s["evalResults"][0]["details"][0]["status"] == "C", 90, "Suspended")
        wait_for(lambda: not kube.core.list_namespaced_pod(namespace, label_selector="flageval.io/evaluation=slow").items, 60, "pods gone")
        assert workload()["spec"]["active"] is False  # stopped through Kueue, which suspended the Job
        (job,) = kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items
        assert job.spec.suspend is True
        asked = model.stats()["total"]
        assert 20 <= asked < limit
        time.sleep(3)
        assert model.stats()["total"] == asked  # nothing runs while suspended

        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "slow", {"spec": {"suspend": False}})
        status = status_when(lambda s: s.get("phase") in ("Succeeded", "Failed"), 240, "the run to finish")
        by_key = model.stats()["by_key"]
    assert status["phase"] == "Succeeded", status
    assert workload()["spec"]["active"] is True
    detail = status["evalResults"][0]["details"][0]
    assert detail["accuracy"] == intended_accuracy("gsm8k", DATA, ACCURACY, 5, limit) and detail["progress"] == f"{limit}/{limit}"
    assert len(by_key) == limit
    assert sum(n - 1 for n in by_key.values()) <= 1  # at most the sample in flight at SIGTERM, never a journaled one
