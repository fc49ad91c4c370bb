"""Kueue mode without a cluster: the queued Job manifests, the caps, the Workload reading and the status
of a dataset that waits for admission."""

from __future__ import annotations

from flageval.api import Status
from flageval.controller.jobs import LABEL_QUEUE, build_jobs
from flageval.controller.kueue import Workloads, WorkloadState, waiting_message
from flageval.controller.reconcile import EvaluationState, reconcile
from flageval.controller.settings import Settings
from flageval.controller.status import JobState, evaluation_status

NOW = "2025-01-01T00:00:00Z"


def evaluation(**spec):
    infos = spec.pop("evalInfos", [
        {"evalModel": "qwen-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions"},
        {"evalModel": "qwen-ascend", "model": "qwen", "evalUrl": "http://h:2/v1/chat/completions", "chip": "Ascend-910B"},
    ])
    return {"apiVersion": "flageval.io/v1alpha1", "kind": "Evaluation",
            "metadata": {"name": "ev", "namespace": "team", "uid": "u-1", "generation": 1},
            "spec": {"evalInfos": infos, "datasets": ["gsm8k", "mmlu"], "limit": 5, **spec}}


def workload(job="job-a", *, active=True, conditions=(), admission=None, owner_kind="Job", name="job-job-a-1b2c3"):
    body = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": name, "namespace": "team",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": owner_kind, "name": job, "uid": "j-1"}]},
            "spec": {"queueName": "flageval", "active": active, "podSets": []},
            "status": {"conditions": list(conditions)}}
    if admission:
        body["status"]["admission"] = admission
    return body


NO_QUOTA = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
            "message": "couldn't assign flavors to pod set main: insufficient unused quota for pods in flavor nvidia-bj, 1 more needed"}


def test_queued_jobs_carry_the_queue_and_start_suspended():
    jobs = build_jobs(evaluation(), Settings(kueue_enabled=True))
    assert {j["metadata"]["labels"][LABEL_QUEUE] for j in jobs} == {"flageval"}
    assert all(j["spec"]["suspend"] is True for j in jobs)
    # The label is the Job's only: the pods and the runners' reports keep the flageval labels alone.
    assert all(LABEL_QUEUE not in j["spec"]["template"]["metadata"]["labels"] for j in jobs)

    own = build_jobs(evaluation(queueName="team-gpus"), Settings(kueue_enabled=True, kueue_queue_name="other"))
    assert {j["metadata"]["labels"][LABEL_QUEUE] for j in own} == {"team-gpus"}

    plain = build_jobs(evaluation(queueName="team-gpus"), Settings())
    assert all(LABEL_QUEUE not in j["metadata"]["labels"] and j["spec"]["suspend"] is False for j in plain)


def test_the_operators_caps_are_off_with_kueue_unless_set():
    assert (Settings().running_cap, Settings().running_cap_per_evaluation) == (64, 8)
    assert (Settings(kueue_enabled=True).running_cap, Settings(kueue_enabled=True).running_cap_per_evaluation) == (float("inf"), float("inf"))
    capped = Settings(kueue_enabled=True, max_running_jobs=3, max_running_jobs_per_evaluation=2)
    assert (capped.running_cap, capped.running_cap_per_evaluation) == (3, 2)


def test_a_workload_says_why_its_job_waits():
    state = WorkloadState.of(workload(conditions=[NO_QUOTA]))
    assert (state.job, state.queue, state.active, state.admitted) == ("job-a", "flageval", True, False)
    assert waiting_message(state, "flageval-chips") == (
        "waiting for Kueue admission in ClusterQueue flageval-chips: Pending: couldn't assign flavors to pod set main: "
        "insufficient unused quota for pods in flavor nvidia-bj, 1 more needed")
    # Its LocalQueue when the ClusterQueue is not known yet; Kueue's own word once admitted.
    assert waiting_message(state, "").startswith("waiting for Kueue admission in LocalQueue flageval: Pending")
    admitted = WorkloadState.of(workload(conditions=[{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved"},
                                                     {"type": "Admitted", "status": "True", "reason": "Admitted"}],
                                         admission={"clusterQueue": "flageval-chips"}))
    assert admitted.admitted and waiting_message(admitted, "") == "admitted by Kueue in ClusterQueue flageval-chips; runner pod starting"
    evicted = WorkloadState.of(workload(active=False, conditions=[
        NO_QUOTA, {"type": "Evicted", "status": "True", "reason": "Deactivated", "message": "The workload is deactivated"}]))
    assert not evicted.active and "Deactivated: The workload is deactivated" in waiting_message(evicted, "q")
    assert waiting_message(None, "q") == "queued for Kueue admission (no Workload yet)"
    assert WorkloadState.of(workload(owner_kind="JobSet")) is None


def test_a_queued_job_is_stopped_and_resumed_through_its_workload():
    tracked = Workloads()
    assert tracked.to_activate("team", "job-a", False) is None  # no Workload yet: nothing to patch
    assert tracked.seen({"type": "ADDED", "object": workload(conditions=[NO_QUOTA])}) is None  # its Job not seen yet
    tracked.job_seen({"type": "ADDED", "object": {"metadata": {"namespace": "team", "name": "job-a", "labels": {"flageval.io/evaluation": "ev"}}}},
                     "flageval.io/evaluation")
    assert tracked.seen({"type": "MODIFIED", "object": workload(conditions=[NO_QUOTA])}) == ("team", "ev")
    tracked.queue_seen({"type": "ADDED", "object": {"metadata": {"namespace": "team", "name": "flageval"}, "spec": {"clusterQueue": "chips"}}})
    assert "ClusterQueue chips" in tracked.waiting("team", "job-a", "flageval")
    assert tracked.to_activate("team", "job-a", True) is None
    assert tracked.to_activate("team", "job-a", False) == "job-job-a-1b2c3"
    tracked.activated("team", "job-a", False)  # patched: not patched again before the watch shows it
    assert tracked.to_activate("team", "job-a", False) is None and tracked.to_activate("team", "job-a", True) == "job-job-a-1b2c3"
    tracked.seen({"type": "DELETED", "object": workload()})
    assert tracked.waiting("team", "job-a", "flageval") == "queued for Kueue admission (no Workload yet)"


def test_a_dataset_waiting_for_admission_is_pending_with_kueues_words():
    ev = evaluation(evalInfos=[{"evalModel": "qwen-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions"}])
    jobs = {("qwen-nvidia-origin", "gsm8k"): JobState("a", suspended=True, queue="flageval"),
            ("qwen-nvidia-origin", "mmlu"): JobState("b", suspended=True, queue="flageval")}
    why = "waiting for Kueue admission in ClusterQueue chips: Pending: insufficient unused quota"
    status = evaluation_status(ev, jobs, {}, waiting={("qwen-nvidia-origin", "gsm8k"): why}, now=NOW)
    gsm8k, mmlu = status.eval_results[0].details
    assert status.phase.value == "Pending" and gsm8k.status == mmlu.status == Status.PENDING
    assert gsm8k.message == why and mmlu.message == "waiting for Kueue admission"
    # Suspended by the user, the same Jobs are cancelled datasets of a Suspended Evaluation.
    status = evaluation_status(evaluation(suspend=True, evalInfos=ev["spec"]["evalInfos"]), jobs, {}, now=NOW)
    assert status.phase.value == "Suspended" and {d.status for d in status.eval_results[0].details} == {Status.CANCELLED}


def test_queued_jobs_are_stopped_through_their_workloads_and_created_without_caps():
    settings = Settings(kueue_enabled=True)
    state = EvaluationState(evaluation())
    # No cap of the operator's own: every Job is created at once, however many run elsewhere.
    actions = reconcile(state, {}, set(), settings, count_running=lambda: 10_000, now=100.0)
    manifests = actions.create
    assert len(manifests) == 4 and not state.waiting
    jobs = {m["metadata"]["name"]: JobState.of(m) for m in manifests}  # as created: suspended, queued
    assert all(job.queue == "flageval" and job.suspended for job in jobs.values())

    actions = reconcile(EvaluationState(evaluation()), jobs, set(), settings, count_running=lambda: 0, now=100.0)
    assert not actions.suspend and actions.activate == dict.fromkeys(jobs, True)  # Kueue resumes them, not the operator
    actions = reconcile(EvaluationState(evaluation(suspend=True)), jobs, set(), settings, count_running=lambda: 0, now=100.0)
    assert not actions.suspend and actions.activate == dict.fromkeys(jobs, False)
