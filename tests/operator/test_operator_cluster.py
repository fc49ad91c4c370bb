"""`flageval operator` on the real control plane with runner Jobs on the node agent and mock model servers."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval.results import read_samples, run_paths
from flageval.verdict import paired_test
from kubernetes import client
from support.cluster import results_claim, wait_for

pytestmark = pytest.mark.cluster
RUNNER_JOBS = "flageval.io/evaluation"  # runner Jobs only (not the report Job written after an Evaluation ends)
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
ACCURACY = 0.7
SECRET = "sk-do-not-leak-4711"


def get(kube, namespace, name):
    return kube.custom.get_namespaced_custom_object(G, V, namespace, P, name)


def phase(kube, namespace, name):
    return (get(kube, namespace, name).get("status") or {}).get("phase")


def events(kube, namespace, name, reasons=(), timeout=30):
    """The Events of one object, once every reason in `reasons` is among them (recorded just after the status patch)."""
    def check():
        found = [e for e in kube.core.list_namespaced_event(namespace).items if e.involved_object.name == name]
        return found if set(reasons) <= {e.reason for e in found} else None
    return wait_for(check, timeout, f"events {sorted(reasons)} on {name}")


def test_evaluation_runs_on_matching_nodes_and_reports_accuracy_diffs_and_release(control_plane, kube, namespace, start_operator):
    results_claim(kube, namespace)
    kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="keys"), string_data={"ascend": SECRET}))
    operator = start_operator(namespace)
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5)) as nvidia, serve_in_thread(default_answerer(DATA, ACCURACY, 6), api_key=SECRET) as ascend:
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
    # The paired test over the samples on the results volume, as the runners reported them.
    volume = control_plane.agent_state / "claims" / namespace / "flageval-results"
    for dataset in ("gsm8k", "mmlu"):
        (base_dir,) = volume.rglob("qwen3-nvidia-origin")
        (other_dir,) = volume.rglob("qwen3-ascend")
        a, b = list(read_samples(run_paths(base_dir, dataset))), list(read_samples(run_paths(other_dir, dataset)))
        assert len(a) == len(b) == (limit if dataset == "gsm8k" else 57 * limit)
        paired = paired_test(a, b, next(iter(a[0].scores)))
        assert other[dataset]["pValue"] == round(paired.p_value, 4) and other[dataset]["diffCI"] == [paired.ci_low, paired.ci_high]
        assert base[dataset].get("pValue") is None
    releases = [all(abs(d["diff"]) < 0.5 for d in r["details"]) for r in status["evalResults"]]
    assert [r["release"] for r in status["evalResults"]] == releases and status["release"] is all(releases)
    assert status["evalResults"][0]["release"] is True and status["evalResults"][1]["datasetsProgress"] == "2/2"

    table = control_plane.kubectl("get", "feval", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "DOMAIN", "PHASE", "PROGRESS", "RELEASE", "AGE"]
    assert table[6:11] == ["qwen3", "NLP", "Succeeded", "4/4", str(status["release"]).lower()]

    reasons = [e.reason for e in events(kube, namespace, "qwen3", {"Started", "Finished"})]
    assert "Started" in reasons and "Finished" in reasons
    # The key reached the runner (the ascend mock demands it) through the Secret only.
    texts = [operator.log(), json.dumps(ev), json.dumps([e.message for e in kube.core.list_namespaced_event(namespace).items]),
             json.dumps(client.ApiClient().sanitize_for_serialization(jobs))]
    assert all(SECRET not in text for text in texts)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert "flageval_jobs_created_total 4.0" in metrics and 'flageval_evaluations{phase="Succeeded"} 1.0' in metrics
    assert urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5).status == 200


def wait_status(kube, namespace, name, predicate, timeout, message):
    """The status once predicate(status) holds."""
    def check():
        status = get(kube, namespace, name).get("status") or {}
        return status if predicate(status) else None
    return wait_for(check, timeout, message)


def single(name, url, dataset_spec, **info):
    return {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
            "spec": {**dataset_spec, "evalInfos": [{"evalModel": f"{name}-nvidia-origin", "model": "qwen3", "evalUrl": url, **info}]}}


def test_suspend_removes_pods_and_resume_finishes_without_repeating_journaled_samples(kube, namespace, start_operator):
    results_claim(kube, namespace)
    start_operator(namespace)
    limit = 120
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.05) as model:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, single("slow", model.chat_url, {"datasets": ["gsm8k"], "limit": limit}))

        def progressed(status):
            results = status.get("evalResults") or [{}]
            done = results[0].get("runningProgress", "0/").split("/")[0]
            return status.get("phase") == "Running" and done.isdigit() and int(done) >= 20
        wait_status(kube, namespace, "slow", progressed, 120, "20 samples done")
        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "slow", {"spec": {"suspend": True}})
        status = wait_status(kube, namespace, "slow", lambda s: s.get("phase") == "Suspended", 60, "phase Suspended")
        assert status["evalResults"][0]["status"] == "C" and status["evalResults"][0]["details"][0]["status"] == "C"
        wait_for(lambda: not kube.core.list_namespaced_pod(namespace, label_selector="flageval.io/evaluation=slow").items, 60, "pods gone")
        job = kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=slow").items[0]
        assert job.spec.suspend is True
        asked = model.stats()["total"]
        assert 20 <= asked < limit
        time.sleep(3)
        assert model.stats()["total"] == asked  # nothing runs while suspended

        kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "slow", {"spec": {"suspend": False}})
        status = wait_status(kube, namespace, "slow", lambda s: s.get("phase") in ("Succeeded", "Failed"), 180, "the run to finish")
        by_key = model.stats()["by_key"]
    assert status["phase"] == "Succeeded", status
    detail = status["evalResults"][0]["details"][0]
    assert detail["accuracy"] == intended_accuracy("gsm8k", DATA, ACCURACY, 5, limit) and detail["progress"] == f"{limit}/{limit}"
    assert len(by_key) == limit
    repeated = sum(n - 1 for n in by_key.values())
    assert repeated <= 1  # at most the one sample in flight at SIGTERM (numConcurrent 1), never a journaled one
    reasons = [e.reason for e in events(kube, namespace, "slow", {"Started", "Stopped", "Resumed", "Finished"})]
    assert {"Started", "Stopped", "Resumed", "Finished"} <= set(reasons)


def test_failing_endpoint_is_oor_and_unknown_dataset_is_f(kube, namespace, start_operator):
    results_claim(kube, namespace)
    start_operator(namespace, backoff_limit="1")
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), faults=FaultPlan({"500": 1.0}, seed=1)) as broken:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, single("broken", broken.chat_url, {"datasets": ["gsm8k", "nonesuch"], "limit": 10},
                                                                               numRetry=2, retryTime=20))
        status = wait_status(kube, namespace, "broken", lambda s: s.get("phase") in ("Succeeded", "Failed"), 240, "the run to finish")
    assert status["phase"] == "Failed" and status["release"] is False
    gsm8k, nonesuch = status["evalResults"][0]["details"]
    assert gsm8k["status"] == "OOR" and "10 of 10 samples failed" in gsm8k["message"] and "500" in gsm8k["message"]
    assert nonesuch["status"] == "F" and "unknown dataset 'nonesuch'" in nonesuch["message"]
    assert status["evalResults"][0]["status"] == "F"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and "OOR" in failed["message"]
    warning = [e for e in events(kube, namespace, "broken", {"Failed"}) if e.reason == "Failed"]
    assert warning and warning[0].type == "Warning" and "10 of 10 samples failed" in warning[0].message
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={kube.batch.list_namespaced_job(namespace, label_selector='flageval.io/dataset=gsm8k').items[0].metadata.name}").items
    assert len(pods) == 2  # the first attempt and one retry (backoffLimit 1)


def test_operator_killed_mid_run_restarts_without_duplicate_jobs_and_status_converges(kube, namespace, start_operator):
    results_claim(kube, namespace)
    first = start_operator(namespace)
    limit = 60
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.05) as model:
        body = single("restart", model.chat_url, {"datasets": ["gsm8k"], "limit": limit})
        body["spec"]["evalInfos"].append({"evalModel": "restart-ascend", "model": "qwen3", "evalUrl": model.chat_url, "chip": "Ascend-910B"})
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)

        def running_both(status):
            return status.get("phase") == "Running" and all(r.get("runningProgress", "0/").split("/")[0] not in ("", "0")
                                                            for r in status.get("evalResults") or [{}, {}])
        wait_status(kube, namespace, "restart", running_both, 120, "both runs under way")
        before = {j.metadata.name: j.metadata.uid for j in kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items}
        assert len(before) == 2
        first.stop("KILL")
        second = start_operator(namespace)
        status = wait_status(kube, namespace, "restart", lambda s: s.get("phase") in ("Succeeded", "Failed"), 240, "the run to finish")

    assert status["phase"] == "Succeeded", status
    after = {j.metadata.name: j.metadata.uid for j in kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items}
    assert after == before  # the same two Jobs: none created again, none replaced
    expected = intended_accuracy("gsm8k", DATA, ACCURACY, 5, limit)
    assert [r["details"][0]["accuracy"] for r in status["evalResults"]] == [expected, expected]
    assert all(r["details"][0]["progress"] == f"{limit}/{limit}" for r in status["evalResults"])
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{second.metrics_port}/metrics", timeout=5).read().decode()
    assert "flageval_jobs_created_total 0.0" in metrics


def test_caps_on_running_jobs_hold_the_rest_pending(kube, namespace, start_operator):
    results_claim(kube, namespace)
    start_operator(namespace, max_running_jobs="2", max_running_jobs_per_evaluation="1")
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.2) as model:
        for name in ("capa", "capb", "capc"):
            kube.custom.create_namespaced_custom_object(G, V, namespace, P, single(name, model.chat_url, {"datasets": ["gsm8k", "mmlu"], "limit": 1},
                                                                                   numConcurrent=2))
        seen_running, seen_waiting = [], []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            jobs = kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items
            running = [j for j in jobs if not any(c.type in ("Complete", "Failed") and c.status == "True" for c in (j.status.conditions or []))]
            seen_running.append(len(running))
            per_evaluation = {}
            for job in running:
                key = job.metadata.labels["flageval.io/evaluation"]
                per_evaluation[key] = per_evaluation.get(key, 0) + 1
            assert max(per_evaluation.values(), default=0) <= 1, per_evaluation
            statuses = [get(kube, namespace, n).get("status") or {} for n in ("capa", "capb", "capc")]
            seen_waiting += [d["message"] for s in statuses for r in s.get("evalResults") or [] for d in r["details"]
                             if d["status"] == "P" and "waiting for a free slot" in d.get("message", "")]
            if all(s.get("phase") in ("Succeeded", "Failed") for s in statuses):
                break
            time.sleep(0.3)
    assert [s["phase"] for s in statuses] == ["Succeeded"] * 3, statuses
    assert max(seen_running) <= 2 and max(seen_running) >= 1
    assert seen_waiting and "in the cluster" in seen_waiting[0]
    assert len(kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items) == 6


def test_a_job_the_server_refuses_is_explained_and_created_once_allowed(kube, namespace, start_operator):
    """A ResourceQuota allows one Job: the other dataset says why it waits (and one Warning Event says it
    too), and its Job is created as soon as the quota allows it."""
    results_claim(kube, namespace)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "jobs"}, "spec": {"hard": {"count/jobs.batch": "1"}}}
    kube.core.create_namespaced_resource_quota(namespace, quota)
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("jobs", namespace).status.hard or {}).get("count/jobs.batch"), 60,
             "the quota to be computed")
    start_operator(namespace)
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5)) as model:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, single("quota", model.chat_url, {"datasets": ["gsm8k", "mmlu"], "limit": 2}))

        def refused(status):
            details = [d for r in status.get("evalResults") or [] for d in r["details"]]
            return [d for d in details if d["status"] == "P" and "exceeded quota" in d.get("message", "")]

        # Two creates race for the one slot; the quota's usage may settle a moment later, so wait for the
        # steady state: one Job, the other dataset refused.
        def steady():
            status = get(kube, namespace, "quota").get("status") or {}
            return status if len(refused(status)) == 1 and len(kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items) == 1 else None
        status = wait_for(steady, 120, "one Job and one dataset waiting on the quota")
        (detail,) = refused(status)
        assert detail["message"].startswith("Job not created yet: HTTP 403: ") and "count/jobs.batch" in detail["message"]
        time.sleep(3)  # a few retries later
        warnings = [e for e in events(kube, namespace, "quota", {"JobNotCreated"}) if e.reason == "JobNotCreated"]
        per_job = [e.message.split(":", 1)[0] for e in warnings]
        assert len(per_job) == len(set(per_job)), per_job  # one Event per Job and kind of refusal, not one per retry
        assert all(e.type == "Warning" and "exceeded quota" in e.message for e in warnings)

        kube.core.patch_namespaced_resource_quota("jobs", namespace, {"spec": {"hard": {"count/jobs.batch": "5"}}})
        status = wait_status(kube, namespace, "quota", lambda s: s.get("phase") in ("Succeeded", "Failed"), 180, "the Evaluation to finish")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert len(kube.batch.list_namespaced_job(namespace, label_selector=RUNNER_JOBS).items) == 2
    assert all(d["accuracy"] == intended_accuracy(d["dataset"], DATA, ACCURACY, 5, 2) for d in status["evalResults"][0]["details"])


def test_a_runner_pod_that_cannot_start_is_pending_and_says_why(kube, namespace, start_operator):
    """No node has the chip's vendor: unschedulable. The API key's Secret is missing: the pod waits for it,
    and runs once it is created. Either way the dataset is P, not R, and its message says why."""
    results_claim(kube, namespace)
    start_operator(namespace)
    with serve_in_thread(default_answerer(DATA, ACCURACY, 5), api_key=SECRET) as model:
        body = {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "stuck"},
                "spec": {"datasets": ["gsm8k"], "limit": 2, "evalInfos": [
                    {"evalModel": "q-nvidia-origin", "model": "qwen3", "evalUrl": model.chat_url, "apiKeySecretRef": {"name": "late", "key": "k"}},
                    {"evalModel": "q-cambricon", "model": "qwen3", "evalUrl": model.chat_url, "chip": "Cambricon-MLU370"}]}}
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)

        def messages(status):
            return {r["evalModel"]: (r["details"][0]["status"], r["details"][0].get("message", "")) for r in status.get("evalResults") or []}

        def explained(status):
            found = messages(status)
            return ("secret" in found.get("q-nvidia-origin", ("", ""))[1] and "cannot be scheduled" in found.get("q-cambricon", ("", ""))[1])
        status = wait_status(kube, namespace, "stuck", explained, 90, "both datasets to say why their runners wait")
        found = messages(status)
        assert status["phase"] == "Pending"
        assert found["q-nvidia-origin"] == ("P", 'runner pod waits: CreateContainerConfigError: secrets "late" not found'), found
        assert found["q-cambricon"][0] == "P" and "didn't match Pod's node affinity/selector" in found["q-cambricon"][1], found

        kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="late"), string_data={"k": SECRET}))
        status = wait_status(kube, namespace, "stuck", lambda s: messages(s).get("q-nvidia-origin", ("",))[0] == "S", 120,
                             "the baseline to run once its Secret exists")
    found = messages(status)
    assert status["evalResults"][0]["details"][0]["accuracy"] == intended_accuracy("gsm8k", DATA, ACCURACY, 5, 2)
    assert found["q-cambricon"][0] == "P" and "cannot be scheduled" in found["q-cambricon"][1]


def test_mm_evaluation_runs_mathvision_with_pictures_and_a_verdict(kube, namespace, start_operator):
    if not (DATA / "mathvision" / "testmini.jsonl").is_file():
        pytest.skip("no MathVision data")
    results_claim(kube, namespace)
    start_operator(namespace)
    limit = 10
    answerers = [default_answerer(DATA, ACCURACY, 5), default_answerer(DATA, ACCURACY, 6)]
    with serve_in_thread(answerers[0]) as nvidia, serve_in_thread(answerers[1]) as ascend:
        body = single("vl", nvidia.chat_url, {"domain": "MM", "limit": limit}, numConcurrent=4)
        body["spec"]["evalInfos"].append({"evalModel": "vl-ascend", "model": "qwen3", "evalUrl": ascend.chat_url, "chip": "Ascend-910B", "numConcurrent": 4})
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)
        status = wait_status(kube, namespace, "vl", lambda s: s.get("phase") in ("Succeeded", "Failed"), 240, "the run to finish")
    assert status["phase"] == "Succeeded", status
    base, other = (r["details"] for r in status["evalResults"])
    expected = [intended_accuracy("mathvision", DATA, ACCURACY, seed, limit) for seed in (5, 6)]
    assert [d["dataset"] for d in base + other] == ["mathvision", "mathvision"]  # the MM domain's default suite
    assert [base[0]["accuracy"], other[0]["accuracy"]] == expected and other[0]["diff"] == round(expected[1] - expected[0], 2)
    assert other[0]["progress"] == f"{limit}/{limit}" and other[0]["pValue"] is not None
    assert status["evalResults"][1]["release"] is (abs(expected[1] - expected[0]) < 0.5)
    assert not any(a.mathvision.image_faults for a in answerers)  # every picture reached the model in its place
