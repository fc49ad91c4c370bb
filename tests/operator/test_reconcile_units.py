"""One Evaluation reconciled without a cluster: reconcile() decides from an EvaluationState, and the loop's
Controller carries its actions out through a recording stand-in for the operator's own small API
interface (kube.KubeApi). The real API server is exercised by test_operator_cluster.py."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import replace

from flageval.controller.jobs import build_jobs
from flageval.controller.loop import POD_LOOK_INTERVAL, Controller
from flageval.controller.reconcile import (
    EvaluationState,
    desired_status,
    job_view,
    reconcile,
)
from flageval.controller.settings import Settings
from flageval.controller.status import JobState
from kubernetes.client.rest import ApiException

NOW = "2025-01-01T00:00:00Z"
INFOS = [{"evalModel": "q-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions"},
         {"evalModel": "q-ascend", "model": "qwen", "evalUrl": "http://h:2/v1/chat/completions", "chip": "Ascend-910B"}]


def evaluation(name="ev", ns="team", generation=1, **spec):
    return {"apiVersion": "flageval.io/v1alpha1", "kind": "Evaluation",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "generation": generation, "creationTimestamp": NOW},
            "spec": {"evalInfos": INFOS, "datasets": ["gsm8k", "mmlu"], "limit": 5, **spec}}


def never() -> int:
    raise AssertionError("the cluster's running Jobs were counted though no Job is missing")


def created(manifest, active=0, complete=False):
    """A Job as the watch shows it after creation."""
    job = copy.deepcopy(manifest)
    job["status"] = {"active": active, **({"conditions": [{"type": "Complete", "status": "True"}]} if complete else {})}
    return JobState.of(job)


def task_result(job: JobState, ns="team", evaluation_name="ev"):
    eval_model, dataset = job.task
    return {"metadata": {"name": job.name, "namespace": ns, "labels": {"flageval.io/evaluation": evaluation_name,
                                                                       "flageval.io/eval-model": eval_model, "flageval.io/dataset": dataset}},
            "progress": {"dataset": dataset, "done": 1, "total": 5}}


def test_missing_jobs_are_created_within_the_caps_and_the_rest_say_why_they_wait():
    settings = Settings(max_running_jobs_per_evaluation=3, max_running_jobs=10)
    state = EvaluationState(evaluation())
    actions = reconcile(state, {}, set(), settings, count_running=lambda: 0, now=100.0)
    assert actions.runner_access and len(actions.create) == 3 and not actions.suspend
    (waiting,) = state.waiting.values()
    assert waiting == "waiting for a free slot (3/3 running in this Evaluation, 3/10 in the cluster)"

    # The cluster-wide cap holds too: 9 of 10 slots are taken elsewhere.
    state = EvaluationState(evaluation())
    actions = reconcile(state, {}, set(), settings, count_running=lambda: 9, now=100.0)
    assert len(actions.create) == 1 and len(state.waiting) == 3
    assert all("10/10 in the cluster" in why for why in state.waiting.values())

    # Every Job there: nothing to create, and the cluster's Jobs are not even counted.
    jobs = {m["metadata"]["name"]: created(m, active=1) for m in build_jobs(evaluation(), settings)}
    actions = reconcile(EvaluationState(evaluation()), jobs, set(), settings, count_running=never, now=100.0)
    assert not actions.create and not actions.runner_access


def test_suspend_and_resume_are_sent_to_unfinished_jobs_and_nothing_is_created_while_suspended():
    settings = Settings()
    manifests = build_jobs(evaluation(), settings)
    jobs = {m["metadata"]["name"]: created(m, active=1) for m in manifests[:3]}
    finished = manifests[3]["metadata"]["name"]
    jobs[finished] = created(manifests[3], complete=True)
    state = EvaluationState(evaluation(generation=2, suspend=True))
    actions = reconcile(state, jobs, set(), settings, count_running=never, now=0.0)
    assert actions.suspend == {name: True for name in list(jobs)[:3]} and not actions.create and not state.waiting

    # Once sent, the suspension stands for the Job until the watch shows it.
    state.suspending.update(actions.suspend)
    view = job_view(jobs.values(), state)
    assert all(view[name].suspended for name in actions.suspend)
    assert not reconcile(state, view, set(), settings, count_running=never, now=0.0).suspend
    shown = [replace(job, suspended=True) if name in actions.suspend else job for name, job in jobs.items()]
    job_view(shown, state)
    assert not state.suspending

    resumed = EvaluationState(evaluation(generation=3, suspend=False))
    assert reconcile(resumed, {j.name: j for j in shown}, set(), settings, count_running=never, now=0.0).suspend == {
        name: False for name in actions.suspend}


def test_a_created_job_holds_its_slot_until_the_watch_shows_it():
    settings = Settings(max_running_jobs_per_evaluation=1)
    state = EvaluationState(evaluation())
    (manifest,) = reconcile(state, {}, set(), settings, count_running=lambda: 0, now=0.0).create
    name = manifest["metadata"]["name"]
    state.unseen_jobs[name] = JobState.of(manifest)
    view = job_view([], state)
    assert list(view) == [name]
    assert not reconcile(state, view, set(), settings, count_running=lambda: 1, now=0.0).create  # the one slot is taken
    job_view([created(manifest, active=1)], state)
    assert not state.unseen_jobs  # the watch has it now


def test_the_status_is_written_at_most_once_per_interval():
    settings = Settings(status_interval=2.0)
    jobs = {m["metadata"]["name"]: created(m, active=1) for m in build_jobs(evaluation(), settings)}
    state = EvaluationState(evaluation())
    assert reconcile(state, jobs, set(), settings, count_running=never, now=10.0).patch_status
    state.patching = True  # a patch under way: not polled, looked at again once it is done
    actions = reconcile(state, jobs, set(), settings, count_running=never, now=10.1)
    assert not actions.patch_status and actions.look_again_at is None and state.look_after_patch
    state.patching, state.look_after_patch, state.last_patch = False, False, 10.2
    actions = reconcile(state, jobs, set(), settings, count_running=never, now=11.0)
    assert not actions.patch_status and actions.look_again_at == 12.2
    assert reconcile(state, jobs, set(), settings, count_running=never, now=12.2).patch_status


def test_runners_that_have_not_reported_are_noted_with_the_time_they_were_first_seen():
    settings = Settings()
    jobs = {m["metadata"]["name"]: created(m, active=1) for m in build_jobs(evaluation(), settings)}
    first, *rest = jobs.values()
    state = EvaluationState(evaluation())
    reconcile(state, jobs, set(), settings, count_running=never, now=5.0)
    assert state.unstarted == dict.fromkeys(jobs, 5.0)
    reconcile(state, jobs, {first.task}, settings, count_running=never, now=9.0)
    assert state.unstarted == {job.name: 5.0 for job in rest}


def test_a_status_equal_to_the_one_last_written_is_not_written_again():
    settings = Settings()
    jobs = {m["metadata"]["name"]: created(m, active=1) for m in build_jobs(evaluation(), settings)}
    state = EvaluationState(evaluation())
    reconcile(state, jobs, set(), settings, count_running=never, now=0.0)
    new = desired_status(state, jobs, [], [], {}, {}, NOW)
    assert new["phase"] == "Pending" and {d["message"] for r in new["evalResults"] for d in r["details"]} == {"runner pod starting"}
    state.written = new
    assert desired_status(state, jobs, [], [], {}, {}, "2025-02-02T00:00:00Z") is None
    first = next(iter(jobs.values()))
    running = desired_status(state, jobs, [task_result(first)], [], {}, {}, NOW)
    assert running["phase"] == "Running"
    note = "runner pod cannot be scheduled: 0/3 nodes are available"
    noted = desired_status(state, jobs, [], [], {}, {first.name: note}, NOW)
    assert note in json.dumps(noted)


class RecordingApi:
    """The controller's API interface (kube.KubeApi), recording each call; refuses the Jobs in `refuse`."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.refuse: dict[str, ApiException] = {}
        self.pods: list[dict] = []

    async def create_job(self, namespace, manifest):
        name = manifest["metadata"]["name"]
        self.calls.append(("create_job", namespace, name))
        if name in self.refuse:
            raise self.refuse[name]
        return {**manifest, "status": {}}

    async def suspend_job(self, namespace, name, suspend):
        self.calls.append(("suspend_job", namespace, name, suspend))

    async def patch_status(self, namespace, name, status):
        self.calls.append(("patch_status", namespace, name, status["phase"]))
        return {**evaluation(name, namespace), "status": status}

    async def runner_pods(self, namespace):
        self.calls.append(("runner_pods", namespace))
        return self.pods

    async def post_event(self, body, reason, message, kind="Normal"):
        self.calls.append(("post_event", body["metadata"]["name"], reason, message, kind))

    async def ensure_runner_access(self, namespace):
        self.calls.append(("ensure_runner_access", namespace))

    def made(self, call):
        return [c for c in self.calls if c[0] == call]


def quota_refusal(used):
    body = {"kind": "Status", "reason": "Forbidden", "message": f"jobs is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch={used}"}
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(body)
    return exc


def look(controller: Controller) -> None:
    """One pass of the loop over the Evaluations that need it, and the calls it sent beside itself."""
    async def once():
        await controller.reconcile_dirty()
        while controller.in_flight:
            await asyncio.gather(*controller.in_flight)
    asyncio.run(once())


def test_the_loop_creates_jobs_once_patches_status_paced_and_forgets_a_deleted_evaluation():
    api, jobs, reports = RecordingApi(), {}, {}
    controller = Controller(Settings(status_interval=3600), api, jobs, reports)
    controller.evaluation_seen(evaluation())
    look(controller)
    assert [c[0] for c in api.calls[:1]] == ["ensure_runner_access"] and len(api.made("create_job")) == 4
    state = controller.evaluations[("team", "ev")]
    # The status waited for the Job creations under way; it is written at the next look.
    assert not api.made("patch_status") and state.look_again_at is not None and not controller.jobs_in_flight
    controller.touch(("team", "ev"))
    look(controller)
    assert api.made("patch_status") == [("patch_status", "team", "ev", "Pending")]
    assert len(state.unseen_jobs) == 4 and not state.creating and not state.waiting

    # The watch shows the Jobs running and a runner reporting: nothing created again, and the new status
    # waits for the interval.
    key = ("team", "ev")
    jobs[key] = [replace(job, active=1) for job in state.unseen_jobs.values()]
    reports[key] = [task_result(jobs[key][0])]
    controller.touch(key)
    look(controller)
    assert len(api.made("create_job")) == 4 and len(api.made("patch_status")) == 1
    assert not state.unseen_jobs and state.look_again_at is not None
    state.last_patch = float("-inf")  # the interval is over
    controller.touch(key)
    look(controller)
    assert api.made("patch_status")[-1] == ("patch_status", "team", "ev", "Running")
    assert ("post_event", "ev", "Started", "Evaluation started", "Normal") in api.calls

    controller.evaluation_gone(key)
    assert not controller.evaluations and not controller.dirty


def test_a_refused_job_is_explained_once_per_kind_of_refusal_and_tried_again():
    api = RecordingApi()
    controller = Controller(Settings(), api, {}, {})
    body = evaluation(evalInfos=INFOS[:1], datasets=["gsm8k"])
    (manifest,) = build_jobs(body, controller.settings)
    name = manifest["metadata"]["name"]
    api.refuse[name] = quota_refusal(1)
    controller.evaluation_seen(body)
    look(controller)
    state = controller.evaluations[("team", "ev")]
    assert state.create_errors[name][1].startswith("HTTP 403: jobs is forbidden: exceeded quota") and not state.unseen_jobs
    warnings = [c for c in api.calls if c[:3] == ("post_event", "ev", "JobNotCreated")]
    assert len(warnings) == 1 and warnings[0][4] == "Warning" and name in warnings[0][3]

    # Tried again with the quota's figures changed: still one Event; the status says why it waits.
    api.refuse[name] = quota_refusal(2)
    state.last_patch = float("-inf")  # the status interval is over
    state.held_since = float("-inf")  # and its wait for the Jobs being created (retried at every look)
    controller.touch(("team", "ev"))
    look(controller)
    assert len(api.made("create_job")) == 2
    assert len([c for c in api.calls if c[:3] == ("post_event", "ev", "JobNotCreated")]) == 1
    detail = state.body["status"]["evalResults"][0]["details"][0]
    assert detail["status"] == "P" and detail["message"].startswith("Job not created yet: HTTP 403: jobs is forbidden")

    del api.refuse[name]
    controller.touch(("team", "ev"))
    look(controller)
    assert len(api.made("create_job")) == 3 and not state.create_errors and name in state.unseen_jobs


def test_pods_are_looked_at_only_for_runners_not_started_after_5_s_and_their_notes_reach_the_status():
    api = RecordingApi()
    settings = Settings()
    key = ("team", "ev")
    manifests = build_jobs(evaluation(), settings)
    jobs = {key: [created(m, active=1) for m in manifests]}
    controller = Controller(settings, api, jobs, {})
    controller.evaluation_seen(evaluation())
    look(controller)
    state = controller.evaluations[key]
    assert len(state.unstarted) == 4 and not api.made("create_job")
    controller.look_at_pods_when_due()
    assert not api.made("runner_pods")  # just created: only starting

    first = manifests[0]["metadata"]["name"]
    state.unstarted = dict.fromkeys(state.unstarted, time.monotonic() - POD_LOOK_INTERVAL)
    unschedulable = {"metadata": {"name": f"{first}-x", "labels": {"flageval.io/evaluation": "ev", "batch.kubernetes.io/job-name": first}},
                     "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}}
    api.pods = [unschedulable]

    async def due_then_again():
        controller.look_at_pods_when_due()
        await asyncio.gather(*controller.in_flight)
        controller.look_at_pods_when_due()  # looked at just now: not again before the interval
        assert not controller.in_flight
    asyncio.run(due_then_again())
    assert api.made("runner_pods") == [("runner_pods", "team")]
    assert controller.pod_notes == {"team": {("ev", first): "runner pod cannot be scheduled: 0/3 nodes are available"}}
    assert key in controller.dirty
    state.last_patch = float("-inf")
    look(controller)
    assert "cannot be scheduled" in json.dumps(state.body["status"])


def test_a_finished_or_deleted_job_has_the_evaluations_waiting_for_a_slot_looked_at_again():
    controller = Controller(Settings(max_running_jobs=1), RecordingApi(), {}, {})
    controller.evaluation_seen(evaluation("a"))
    controller.evaluation_seen(evaluation("b"))
    look(controller)
    assert controller.evaluations[("team", "a")].waiting and controller.evaluations[("team", "b")].waiting
    running = next(iter(controller.evaluations[("team", "a")].unseen_jobs.values()))
    controller.job_changed(("team", "a"), running.name, replace(running, complete=True))
    assert controller.dirty == {("team", "a"), ("team", "b")}
    controller.dirty.clear()
    controller.job_changed(("team", "b"), "gone", None)
    assert controller.dirty == {("team", "a"), ("team", "b")}


def test_a_job_event_that_changes_nothing_the_operator_reads_wakes_nobody():
    controller = Controller(Settings(), RecordingApi(), {}, {})
    controller.evaluation_seen(evaluation("a"))
    look(controller)
    job = next(iter(controller.evaluations[("team", "a")].unseen_jobs.values()))
    controller.job_changed(("team", "a"), job.name, job)
    assert controller.dirty == {("team", "a")}
    controller.dirty.clear()
    controller.job_changed(("team", "a"), job.name, job)  # the same state again (the job controller counted its pods)
    assert controller.dirty == set()
    controller.job_changed(("team", "a"), job.name, replace(job, active=1))
    assert controller.dirty == {("team", "a")}
    controller.dirty.clear()
    controller.job_changed(("team", "a"), job.name, None)
    assert controller.dirty == {("team", "a")} and ("team", job.name) not in controller.job_states


def test_only_evaluations_that_looked_for_a_baseline_elsewhere_are_looked_at_when_another_succeeds():
    controller = Controller(Settings(), RecordingApi(), {}, {})
    controller.evaluation_seen(evaluation("own"))  # its NVIDIA service is its own baseline
    controller.evaluation_seen(evaluation("needy", evalInfos=INFOS[1:]))  # an Ascend service only: the baseline is elsewhere
    controller.evaluation_seen(evaluation("done"))
    controller.evaluation_seen(evaluation("elsewhere", ns="other", evalInfos=INFOS[1:]))
    look(controller)  # Jobs created; the statuses wait for them
    look(controller)  # statuses written
    assert len(controller.api.made("patch_status")) == 4
    wants = {key[1]: state.wants_others_baseline for key, state in controller.evaluations.items()}
    assert wants == {"own": False, "needy": True, "done": False, "elsewhere": True}
    controller.dirty.clear()
    done = controller.evaluations[("team", "done")]
    done.body = {**done.body, "status": {"phase": "Running"}}
    controller.new_status = lambda key: {"phase": "Succeeded", "release": True}  # "done" has just finished
    asyncio.run(controller.patch_status(done))
    assert controller.dirty == {("team", "needy")}  # not "own", and nothing in another namespace
