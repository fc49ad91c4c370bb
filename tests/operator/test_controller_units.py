"""Job manifests and status aggregation: pure functions, no cluster."""

from __future__ import annotations

import json
import random
import re

import pytest
from flageval.api import DatasetResult, SampleRecord, Status
from flageval.api.evaluation import EvaluationTaskResult, ServingSummary, TaskOutcome
from flageval.api.results import (
    ServingFigures,
    pack_verdicts,
    sample_verdicts,
    unpack_verdicts,
)
from flageval.controller.jobs import build_jobs, job_name
from flageval.controller.settings import Settings
from flageval.controller.status import (
    JobState,
    evaluation_status,
    pod_note,
    same_status,
    status_body,
)
from flageval.verdict import mcnemar_exact, paired_test

NOW = "2025-01-01T00:00:00Z"


def evaluation(name="ev", ns="team", **spec):
    infos = spec.pop("evalInfos", [
        {"evalModel": "qwen-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions", "baseModelName": "Qwen3-8B"},
        {"evalModel": "qwen-ascend", "model": "qwen", "evalUrl": "http://h:2/v1/chat/completions", "chip": "Ascend-910B",
         "baseModelName": "Qwen3-8B", "apiKeySecretRef": {"name": "keys", "key": "ascend"}},
    ])
    return {"apiVersion": "flageval.io/v1alpha1", "kind": "Evaluation",
            "metadata": {"name": name, "namespace": ns, "uid": "u-1", "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"evalInfos": infos, "datasets": ["gsm8k", "mmlu"], "limit": 5, **spec}}


def test_one_job_per_service_and_dataset_with_placement_and_owner(monkeypatch):
    monkeypatch.delenv("FLAGEVAL_DATA_DIR", raising=False)  # Settings reads it: the runner's command would gain --data-dir
    jobs = build_jobs(evaluation(), Settings(tolerations=[{"key": "gpu", "operator": "Exists"}], backoff_limit=2))
    assert len(jobs) == 4 and len({j["metadata"]["name"] for j in jobs}) == 4
    ascend = next(j for j in jobs if j["metadata"]["labels"]["flageval.io/eval-model"] == "qwen-ascend" and j["metadata"]["labels"]["flageval.io/dataset"] == "mmlu")
    pod = ascend["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"flageval.io/chip-vendor": "ascend", "flageval.io/region": "bj"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert ascend["metadata"]["ownerReferences"] == [{"apiVersion": "flageval.io/v1alpha1", "kind": "Evaluation", "name": "ev", "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert ascend["spec"]["backoffLimit"] == 2 and ascend["spec"]["suspend"] is False
    assert ascend["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    container = pod["containers"][0]
    assert container["command"][:4] == ["flageval", "runner", "--dataset", "mmlu"]
    assert "/var/lib/flageval/results/team/ev-u-1/qwen-ascend" in container["command"] and container["command"][-4:-2] == ["--limit", "5"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FLAGEVAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "ascend"}
    info = json.loads(env["FLAGEVAL_EVAL_INFO"]["value"])
    assert info["eval_model"] == "qwen-ascend" and info["chip"] == "Ascend-910B" and "api_key" not in info
    assert env["FLAGEVAL_TASK_RESULT"]["value"] == f"team/{ascend['metadata']['name']}"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]} and pod["securityContext"]["runAsNonRoot"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9091}] and container["command"][-2:] == ["--metrics-port", "9091"]
    assert any(v.get("persistentVolumeClaim") == {"claimName": "flageval-results"} for v in pod["volumes"])
    baseline = next(j for j in jobs if j["metadata"]["labels"]["flageval.io/eval-model"] == "qwen-nvidia-origin")
    env = {e["name"]: e for e in baseline["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLAGEVAL_API_KEY"] == {"name": "FLAGEVAL_API_KEY", "value": "EMPTY"}


def test_job_names_are_deterministic_short_and_distinct():
    long = job_name("e" * 63, "M" * 63, "mmlu")
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", long)
    assert long == job_name("e" * 63, "M" * 63, "mmlu")
    assert job_name("ev", "A", "gsm8k") != job_name("ev", "a", "gsm8k")  # evalModels differing in case


def test_suspend_is_mirrored_and_the_default_suite_is_used():
    body = evaluation(suspend=True)
    del body["spec"]["datasets"]
    jobs = build_jobs(body, Settings())
    assert {j["metadata"]["labels"]["flageval.io/dataset"] for j in jobs} == {"gsm8k", "mmlu"}
    assert all(j["spec"]["suspend"] for j in jobs)


def report(dataset, done=0, total=5, status=None, accuracy=None, message=""):
    body = {"progress": {"dataset": dataset, "done": done, "total": total}}
    if status:
        body["result"] = {"dataset": dataset, "status": status, "accuracy": accuracy, "progress": f"{done}/{total}", "message": message}
    return EvaluationTaskResult.model_validate(body)


def done(name):
    return JobState(name, complete=True)


def test_running_then_succeeded_with_diffs_and_release():
    ev = evaluation()
    jobs = {("qwen-nvidia-origin", "gsm8k"): done("a"), ("qwen-nvidia-origin", "mmlu"): JobState("b", active=1),
            ("qwen-ascend", "gsm8k"): done("c")}
    reports = {("qwen-nvidia-origin", "gsm8k"): report("gsm8k", 5, status="S", accuracy=60.0),
               ("qwen-nvidia-origin", "mmlu"): report("mmlu", 3, total=285),
               ("qwen-ascend", "gsm8k"): report("gsm8k", 5, status="S", accuracy=80.0)}
    status = evaluation_status(ev, jobs, reports, now=NOW)
    assert status.phase.value == "Running" and status.progress == "2/4" and status.release is None
    base, other = status.eval_results
    assert base.status == Status.RUNNING and base.datasets_progress == "1/2" and base.running_dataset == "mmlu" and base.running_progress == "3/285"
    assert other.details[0].diff == 20.0 and other.details[0].base_accuracy == 60.0
    assert other.details[1].status == Status.PENDING and other.details[1].message == "waiting for a free slot"

    jobs |= {("qwen-nvidia-origin", "mmlu"): done("b"), ("qwen-ascend", "mmlu"): done("d")}
    reports |= {("qwen-nvidia-origin", "mmlu"): report("mmlu", 285, 285, "S", 50.0), ("qwen-ascend", "mmlu"): report("mmlu", 285, 285, "S", 50.25)}
    status = evaluation_status(ev, jobs, reports, now=NOW)
    assert status.phase.value == "Succeeded" and status.progress == "4/4"
    base, other = status.eval_results
    assert base.release and [d.diff for d in base.details] == [0.0, 0.0]
    assert [d.diff for d in other.details] == [20.0, 0.25] and other.release is False and status.release is False
    assert {c.type: c.status for c in status.conditions} == {"Progressing": "False", "Suspended": "False", "Complete": "True", "Failed": "False"}


def test_a_runner_that_has_not_started_is_pending_and_says_why():
    ev = evaluation(evalInfos=[{"evalModel": "qwen-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions"}])
    jobs = {("qwen-nvidia-origin", "gsm8k"): JobState("a", active=1), ("qwen-nvidia-origin", "mmlu"): JobState("b", active=1)}
    note = "runner pod cannot be scheduled: 0/3 nodes are available"
    status = evaluation_status(ev, jobs, {}, waiting={("qwen-nvidia-origin", "mmlu"): note}, now=NOW)
    gsm8k, mmlu = status.eval_results[0].details
    assert status.phase.value == "Pending" and gsm8k.status == mmlu.status == Status.PENDING
    assert gsm8k.message == "runner pod starting" and mmlu.message == note
    status = evaluation_status(ev, jobs, {("qwen-nvidia-origin", "gsm8k"): report("gsm8k", 0)}, now=NOW)
    assert status.phase.value == "Running" and status.eval_results[0].details[0].status == Status.RUNNING


@pytest.mark.parametrize("pod_status, expected", [
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]},
     "runner pod cannot be scheduled: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
    ({"phase": "Pending", "containerStatuses": [{"name": "runner", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                                                       "message": 'secret "keys" not found'}}}]},
     'runner pod waits: CreateContainerConfigError: secret "keys" not found'),
    ({"phase": "Pending", "containerStatuses": [{"name": "runner", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]},
     "runner pod waits: ImagePullBackOff"),
    ({"phase": "Pending", "containerStatuses": [{"name": "runner", "state": {"waiting": {"reason": "ContainerCreating"}}}]}, None),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}, None),
    ({"phase": "Running", "containerStatuses": [{"name": "runner", "state": {"running": {}}}]}, None),
    ({}, None),
])
def test_pod_note_says_why_a_runner_pod_has_not_started(pod_status, expected):
    assert pod_note({"metadata": {"name": "p"}, "status": pod_status}) == expected


def test_suspended_and_failed():
    ev = evaluation(suspend=True)
    jobs = {("qwen-nvidia-origin", "gsm8k"): done("a"), ("qwen-nvidia-origin", "mmlu"): JobState("b", suspended=True)}
    status = evaluation_status(ev, jobs, {("qwen-nvidia-origin", "gsm8k"): report("gsm8k", 5, status="S", accuracy=60.0)}, now=NOW)
    assert status.phase.value == "Suspended"
    assert [d.status for d in status.eval_results[0].details] == [Status.SUCCESS, Status.CANCELLED]
    assert status.eval_results[1].status == Status.CANCELLED

    ev = evaluation(evalInfos=[{"evalModel": "x", "model": "m", "evalUrl": "http://h:1/v1/chat/completions"}], datasets=["gsm8k", "nope"])
    jobs = {("x", "gsm8k"): JobState("a", failed=True, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit"),
            ("x", "nope"): JobState("b", failed=True, reason="PodFailurePolicy", message="exit code 2")}
    reports = {("x", "gsm8k"): report("gsm8k", 5, status="OOR", message="5 of 5 samples failed after 2 attempts; last error: HTTP 500")}
    status = evaluation_status(ev, jobs, reports, now=NOW)
    gsm8k, nope = status.eval_results[0].details
    assert gsm8k.status == Status.OUT_OF_RETRIES and "HTTP 500" in gsm8k.message
    assert nope.status == Status.FAILURE and nope.message.startswith("PodFailurePolicy")
    assert status.phase.value == "Failed" and status.eval_results[0].status == Status.FAILURE and "x/gsm8k: OOR" in status.message
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.status == "True" and "HTTP 500" in failed.message


def test_an_unknown_mode_fails_without_jobs():
    ev = evaluation(mode="nonesuch")
    del ev["spec"]["datasets"]
    status = evaluation_status(ev, {}, {}, now=NOW)
    assert status.phase.value == "Failed" and "unknown mode 'nonesuch'" in status.message


def succeeded_baseline(name, created, accuracy):
    body = evaluation(name, evalInfos=[{"evalModel": "q-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions", "baseModelName": "Qwen3-8B"}])
    body["metadata"]["creationTimestamp"] = created
    body["status"] = {"phase": "Succeeded", "evalResults": [{"evalModel": "q-nvidia-origin", "status": "S",
                      "details": [{"dataset": "gsm8k", "status": "S", "accuracy": accuracy}]}]}
    return body


@pytest.mark.parametrize("explicit, expected", [(None, 70.0), ("old", 65.0), ("missing", None)])
def test_baseline_from_another_evaluation(explicit, expected):
    ev = evaluation(evalInfos=[{"evalModel": "q-ascend", "model": "qwen", "evalUrl": "http://h:2/v1/chat/completions", "baseModelName": "Qwen3-8B", "chip": "Ascend-910B"}],
                    datasets=["gsm8k"], baseline=explicit)
    others = [succeeded_baseline("old", "2024-01-01T00:00:00Z", 65.0), succeeded_baseline("new", "2024-06-01T00:00:00Z", 70.0)]
    status = evaluation_status(ev, {("q-ascend", "gsm8k"): done("a")}, {("q-ascend", "gsm8k"): report("gsm8k", 5, status="S", accuracy=70.2)}, others, now=NOW)
    detail = status.eval_results[0].details[0]
    assert detail.base_accuracy == expected
    if expected is None:
        assert detail.diff is None and "no baseline for Qwen3-8B" in detail.message and status.release is False
    else:
        assert detail.diff == round(70.2 - expected, 2) and status.release is (abs(70.2 - expected) < 0.5)


def test_unchanged_status_compares_equal_and_keeps_transition_times():
    ev = evaluation()
    first = status_body(evaluation_status(ev, {}, {}, now=NOW))
    ev["status"] = first
    second = status_body(evaluation_status(ev, {}, {}, now="2025-02-02T00:00:00Z"))
    assert same_status(first, second) and second["conditions"][0]["lastTransitionTime"] == NOW


def records(rights, failed=()):
    """Sample records in order: rights[i] says whether sample i was right; indexes in `failed` errored."""
    return [SampleRecord(id=f"gsm8k/{i}", index=i, error="HTTP 500" if i in failed else None,
                         scores={} if i in failed else {"exact_match": float(r)}) for i, r in enumerate(rights)]


def outcome_report(dataset, recs, accuracy):
    result = DatasetResult(dataset=dataset, status=Status.SUCCESS, accuracy=accuracy, n_samples=len(recs), progress=f"{len(recs)}/{len(recs)}")
    return EvaluationTaskResult(result=TaskOutcome.of(result, recs))


def test_paired_p_value_and_interval_from_the_runners_sample_verdicts():
    rng = random.Random(3)
    base_rights = [rng.random() < 0.7 for _ in range(300)]
    # The other chip flips 30 samples to wrong and 12 to right: a real, if small, difference.
    other_rights = list(base_rights)
    wrong = [i for i, r in enumerate(base_rights) if r][:30]
    right = [i for i, r in enumerate(base_rights) if not r][:12]
    for i in wrong:
        other_rights[i] = False
    for i in right:
        other_rights[i] = True
    base, other = records(base_rights), records(other_rights, failed={5})
    ev = evaluation(datasets=["gsm8k"])
    jobs = {("qwen-nvidia-origin", "gsm8k"): done("a"), ("qwen-ascend", "gsm8k"): done("b")}
    reports = {("qwen-nvidia-origin", "gsm8k"): outcome_report("gsm8k", base, 70.0),
               ("qwen-ascend", "gsm8k"): outcome_report("gsm8k", other, 64.0)}
    detail = evaluation_status(ev, jobs, reports, now=NOW).eval_results[1].details[0]
    expected = paired_test(base, other, "exact_match")
    assert expected.n == 299 and expected.only_a == 30 - (5 in wrong) and expected.only_b == 12 - (5 in right)
    assert detail.p_value == round(expected.p_value, 4) and detail.p_value < 0.05
    assert detail.diff_ci == [expected.ci_low, expected.ci_high] and expected.ci_high < 0
    body = status_body(evaluation_status(ev, jobs, reports, now=NOW))
    assert body["evalResults"][1]["details"][0]["diffCI"] == detail.diff_ci and body["evalResults"][0]["details"][0]["pValue"] is None


def test_status_carries_the_disagreement_counts_and_a_serving_summary():
    base, other = records([True, True, False, False, True] * 8), records([True, False, True, False, False] * 8)
    figures = ServingFigures(requests=40, latency_p50_ms=201.5, latency_p99_ms=260.0, output_tokens_per_second=55.0,
                             truncated=2, truncated_percent=5.0, errors={"http_503": 4, "timeout": 1}, retries={"http_503": 4})
    other_report = outcome_report("gsm8k", other, 40.0)
    other_report.result.serving = ServingSummary.of(figures)
    ev = evaluation(datasets=["gsm8k"])
    jobs = {("qwen-nvidia-origin", "gsm8k"): done("a"), ("qwen-ascend", "gsm8k"): done("b")}
    reports = {("qwen-nvidia-origin", "gsm8k"): outcome_report("gsm8k", base, 60.0), ("qwen-ascend", "gsm8k"): other_report}
    body = status_body(evaluation_status(ev, jobs, reports, now=NOW))
    detail = body["evalResults"][1]["details"][0]
    # per block of five: both right 1, right→wrong 2, wrong→right 1, both wrong 1
    assert detail["disagreement"] == {"bothRight": 8, "rightToWrong": 16, "wrongToRight": 8, "bothWrong": 8}
    assert detail["pValue"] == round(mcnemar_exact(16, 8), 4)
    assert detail["serving"] == {"latencyP50Ms": 201.5, "latencyP99Ms": 260.0, "outputTokensPerSecond": 55.0,
                                 "truncatedPercent": 5.0, "errors": 5, "retries": 4}
    assert body["evalResults"][0]["details"][0]["disagreement"] is None


def test_no_paired_figures_without_comparable_verdicts():
    ev = evaluation(datasets=["gsm8k"])
    jobs = {("qwen-nvidia-origin", "gsm8k"): done("a"), ("qwen-ascend", "gsm8k"): done("b")}
    shorter = {("qwen-nvidia-origin", "gsm8k"): outcome_report("gsm8k", records([True] * 10), 100.0),
               ("qwen-ascend", "gsm8k"): outcome_report("gsm8k", records([True] * 9), 100.0)}
    older = {("qwen-nvidia-origin", "gsm8k"): report("gsm8k", 5, status="S", accuracy=60.0),  # a runner that sent no verdicts
             ("qwen-ascend", "gsm8k"): outcome_report("gsm8k", records([True] * 5), 100.0)}
    for reports in (shorter, older):
        detail = evaluation_status(ev, jobs, reports, now=NOW).eval_results[1].details[0]
        assert detail.diff is not None and detail.p_value is None and detail.diff_ci is None


def test_a_baseline_in_another_evaluation_is_paired_through_its_reports():
    ev = evaluation(evalInfos=[{"evalModel": "q-ascend", "model": "qwen", "evalUrl": "http://h:2/v1/chat/completions", "baseModelName": "Qwen3-8B", "chip": "Ascend-910B"}],
                    datasets=["gsm8k"], baseline="old")
    others = [succeeded_baseline("old", "2024-01-01T00:00:00Z", 50.0)]
    base, other = records([True, False] * 20), records([True, True] * 20)
    mine = {("q-ascend", "gsm8k"): outcome_report("gsm8k", other, 100.0)}
    detail = evaluation_status(ev, {("q-ascend", "gsm8k"): done("a")}, mine, others,
                               others_reports={("old", "q-nvidia-origin", "gsm8k"): outcome_report("gsm8k", base, 50.0)}, now=NOW).eval_results[0].details[0]
    assert detail.diff == 50.0 and detail.p_value == round(mcnemar_exact(0, 20), 4) and detail.diff_ci[0] > 0


def test_sample_verdicts_pack_small_and_round_trip():
    rng = random.Random(1)
    recs = [SampleRecord(id=str(i), index=i, scores={"acc": float(rng.random() < 0.6)}) for i in range(14042)]
    recs[7] = SampleRecord(id="7", index=7, error="timeout")
    text = sample_verdicts(recs, 14042)
    assert len(text) == 14042 and text[7] == "-" and text.count("1") == sum(r.scores.get("acc", 0) for r in recs)
    packed = pack_verdicts(text)
    assert unpack_verdicts(packed) == text and len(packed) < 3000
    with pytest.raises(ValueError, match="not packed sample verdicts"):
        unpack_verdicts("bm90IHppcA==")


def test_the_operator_finds_another_evaluations_reports_by_evaluation_model_and_dataset():
    from flageval.controller.reconcile import ReportsOf

    report = outcome_report("gsm8k", records([True, False] * 20), 50.0).model_dump(mode="json", by_alias=True)
    report["metadata"] = {"name": "old-q-gsm8k", "labels": {"flageval.io/eval-model": "q-nvidia-origin", "flageval.io/dataset": "gsm8k"}}
    index = {("team", "old"): [report]}  # as kopf's index of task results holds them
    found = ReportsOf(index, "team")
    assert found.get(("old", "q-nvidia-origin", "gsm8k")).result.sample_verdicts == report["result"]["sampleVerdicts"]
    assert found.get(("old", "q-nvidia-origin", "mmlu")) is None and found.get(("new", "q-nvidia-origin", "gsm8k")) is None
    assert list(found) == [("old", "q-nvidia-origin", "gsm8k")] and not list(ReportsOf(index, "elsewhere"))


def test_a_complete_job_is_s_only_with_its_runners_accuracy():
    ev = evaluation(evalInfos=[{"evalModel": "x", "model": "m", "evalUrl": "http://h:1/v1/chat/completions"}], datasets=["gsm8k"])
    key = ("x", "gsm8k")
    just_now = JobState("a", complete=True, completed_at="2024-12-31T23:59:50Z")  # 10 s before NOW
    long_ago = JobState("a", complete=True, completed_at="2024-12-31T23:50:00Z")
    # The Job's watch event came before its result's: not finished yet, and not S.
    status = evaluation_status(ev, {key: just_now}, {key: report("gsm8k", 5)}, now=NOW)
    detail = status.eval_results[0].details[0]
    assert status.phase.value == "Running" and detail.status == Status.RUNNING and detail.accuracy is None
    # No result ever came: the dataset is OOR and says so; the Evaluation fails.
    for reports in ({}, {key: report("gsm8k", 5)}):
        status = evaluation_status(ev, {key: long_ago}, reports, now=NOW)
        detail = status.eval_results[0].details[0]
        assert detail.status == Status.OUT_OF_RETRIES and detail.accuracy is None and "reported no result" in detail.message
        assert status.phase.value == "Failed" and status.release is False
    # A success without an accuracy is no success.
    status = evaluation_status(ev, {key: long_ago}, {key: report("gsm8k", 5, status="S")}, now=NOW)
    assert status.eval_results[0].details[0].status == Status.OUT_OF_RETRIES and status.phase.value == "Failed"
    status = evaluation_status(ev, {key: just_now}, {key: report("gsm8k", 5, status="S", accuracy=40.0)}, now=NOW)
    assert status.eval_results[0].details[0].status == Status.SUCCESS and status.phase.value == "Succeeded"


def test_a_failed_job_without_a_result_says_none_was_reported():
    ev = evaluation(evalInfos=[{"evalModel": "x", "model": "m", "evalUrl": "http://h:1/v1/chat/completions"}], datasets=["gsm8k"])
    failed = JobState("a", failed=True, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
    status = evaluation_status(ev, {("x", "gsm8k"): failed}, {}, now=NOW)
    detail = status.eval_results[0].details[0]
    assert detail.status == Status.OUT_OF_RETRIES and detail.message.startswith("BackoffLimitExceeded")
    assert "no result was reported" in detail.message and status.phase.value == "Failed"


def test_the_runners_access_is_a_namespaced_role_of_exactly_its_rules():
    from flageval.controller.jobs import RUNNER_RULES, runner_access

    sa, role, binding = runner_access("team", Settings(runner_service_account="evals-runner"))
    assert [o["kind"] for o in (sa, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert all(o["metadata"]["name"] == "evals-runner" and o["metadata"]["namespace"] == "team"
               and o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flageval-operator" for o in (sa, role, binding))
    assert role["rules"] == RUNNER_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "evals-runner"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "evals-runner", "namespace": "team"}]
    job = build_jobs(evaluation(), Settings(runner_service_account="evals-runner"))[0]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "evals-runner"


def test_a_refused_eval_url_fails_the_evaluation_without_jobs():
    infos = [{"evalModel": "qwen-nvidia-origin", "model": "qwen", "evalUrl": "http://h:1/v1/chat/completions"},
             {"evalModel": "qwen-ascend", "model": "qwen", "evalUrl": "http://169.254.169.254/v1/chat/completions", "chip": "Ascend-910B"}]
    ev, settings = evaluation(evalInfos=infos), Settings(url_deny="127.0.0.0/8")
    rule = ("spec.evalInfos[1].evalUrl http://169.254.169.254/v1/chat/completions: 169.254.169.254 is link-local (cloud metadata "
            "services answer at 169.254.169.254); refused unless FLAGEVAL_URL_ALLOW lists it")
    with pytest.raises(ValueError) as refused:
        build_jobs(ev, settings)
    assert str(refused.value) == rule
    status = evaluation_status(ev, {}, {}, url_policy=settings.url_policy, now=NOW)
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert status.phase.value == "Failed" and status.message == rule and (failed.status, failed.reason, failed.message) == ("True", "EvalUrlRefused", rule)
    assert [r.status for r in status.eval_results] == [Status.FAILURE, Status.FAILURE]
    # Allowed: Jobs, which carry the policy to their runners.
    allowed = build_jobs(ev, Settings(url_allow="169.254.169.254", url_deny="127.0.0.0/8"))
    env = {e["name"]: e.get("value") for e in allowed[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["FLAGEVAL_URL_ALLOW"], env["FLAGEVAL_URL_DENY"]) == ("169.254.169.254", "127.0.0.0/8")
    assert "FLAGEVAL_URL_ALLOW" not in {e["name"] for e in build_jobs(evaluation(), Settings())[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    with pytest.raises(ValueError, match="'10.0.0.0/40' is not a CIDR"):
        Settings(url_allow="10.0.0.0/40")


def test_the_report_job_runs_flageval_report_over_the_services_beside_their_results():
    from flageval.controller.jobs import LABEL_EVALUATION, results_dir
    from flageval.controller.report_job import (
        LABEL_REPORT_OF,
        build_report_job,
        report_path,
    )
    from flageval.controller.settings import Settings

    settings = Settings()
    ev = evaluation()
    ev["metadata"].setdefault("uid", "0123456789abcdef")
    job = build_report_job(ev, settings)
    meta = ev["metadata"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    dirs = [results_dir(settings, meta["namespace"], meta["name"], meta["uid"], name) for name in ("qwen-nvidia-origin", "qwen-ascend")]
    assert container["command"][:4] == ["flageval", "report", *dirs]
    out = container["command"][container["command"].index("--out") + 1]
    assert out == report_path(settings, ev) and out == f"{dirs[0].rsplit('/', 1)[0]}/report.html"
    labels = job["metadata"]["labels"]
    assert LABEL_EVALUATION not in labels and labels[LABEL_REPORT_OF] == meta["name"]  # unseen by the runner Jobs' index
    assert job["metadata"]["ownerReferences"][0]["uid"] == meta["uid"]
    claim = job["spec"]["template"]["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == settings.results_claim
