"""The runner's right to report, on the real control plane: the operator gives runners a Role of their own
(no chart needed); a runner whose report is refused fails instead of succeeding without an accuracy; an
operator that may not make that Role starts no runner and says which right it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from flageval.controller.jobs import RUNNER_RULES
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import finished_status, results_claim, wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
RBAC = "rbac.authorization.k8s.io"
MANAGED = "app.kubernetes.io/managed-by=flageval-operator"


def evaluation(name: str, url: str, limit: int = 5) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
            "spec": {"datasets": ["gsm8k"], "limit": limit,
                     "evalInfos": [{"evalModel": f"{name}-nvidia-origin", "model": "qwen3", "evalUrl": url}]}}


def status_of(kube, namespace: str, name: str) -> dict:
    return kube.custom.get_namespaced_custom_object(G, V, namespace, P, name).get("status") or {}




def runner_logs(control_plane, kube, namespace: str, evaluation: str) -> list[tuple[object, str]]:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"flageval.io/evaluation={evaluation}").items
    return [(pod, (control_plane.agent_state / "pods" / f"{namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}" / "logs" / "runner.log")
             .read_text(errors="replace")) for pod in pods]


def test_without_the_chart_the_operator_gives_runners_a_role_of_their_own_and_results_carry_accuracy(control_plane, kube, namespace, start_operator):
    """The README's development path: CRDs, `flageval operator`, a results claim, an Evaluation — nothing else."""
    results_claim(kube, namespace)
    start_operator(namespace)
    with serve_in_thread(default_answerer(DATA, 0.7, 3)) as model:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, evaluation("plain", model.chat_url))
        status = finished_status(kube, namespace, "plain", 180)
    detail = status["evalResults"][0]["details"][0]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert detail["status"] == "S" and detail["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 3, 5)

    role = kube.rbac.read_namespaced_role("flageval-runner", namespace)
    assert [kube.api.sanitize_for_serialization(r) for r in role.rules] == RUNNER_RULES
    binding = kube.rbac.read_namespaced_role_binding("flageval-runner", namespace)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", "flageval-runner")
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", "flageval-runner", namespace)]
    for kind, listed in (("ServiceAccount", kube.core.list_namespaced_service_account), ("Role", kube.rbac.list_namespaced_role),
                         ("RoleBinding", kube.rbac.list_namespaced_role_binding)):
        assert [o.metadata.name for o in listed(namespace, label_selector=MANAGED).items] == ["flageval-runner"], kind
    for pod, log in runner_logs(control_plane, kube, namespace, "plain"):
        assert pod.spec.service_account_name == "flageval-runner"
        assert "cannot report" not in log and "may not" not in log, log


def test_a_runner_whose_report_is_refused_fails_and_its_dataset_is_never_s(control_plane, kube, namespace, start_operator):
    """Runner rights left to the user, who gave none: the pods run as `default`, which may not write task results."""
    results_claim(kube, namespace)
    start_operator(namespace, manage_runner_rbac="false", runner_service_account="default", backoff_limit="1")
    with serve_in_thread(default_answerer(DATA, 0.7, 3)) as model:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, evaluation("refused", model.chat_url))
        status = finished_status(kube, namespace, "refused", 180)
    detail = status["evalResults"][0]["details"][0]
    assert status["phase"] == "Failed" and status["release"] is False, json.dumps(status, indent=1)
    assert detail["status"] == "OOR" and detail.get("accuracy") is None
    assert detail["message"].startswith("BackoffLimitExceeded") and "no result was reported" in detail["message"]
    assert "refused-nvidia-origin/gsm8k: OOR" in status["message"]
    logs = runner_logs(control_plane, kube, namespace, "refused")
    assert len(logs) == 2  # the first attempt and the one retry of backoffLimit 1
    for pod, log in logs:
        assert pod.status.container_statuses[0].state.terminated.exit_code == 3
        assert "the runner may not create evaluationtaskresults.flageval.io" in log and "HTTP 403" in log, log
    with pytest.raises(ApiException) as absent:  # and the operator made nothing it was told not to
        kube.rbac.read_namespaced_role("flageval-runner", namespace)
    assert absent.value.status == 404


# The chart's operator rights for one watched namespace, without those to make the runner's Role.
OPERATOR_RULES = [
    {"apiGroups": [G], "resources": ["evaluations", "evaluationtaskresults"], "verbs": ["list", "watch"]},
    {"apiGroups": [G], "resources": ["evaluations/status"], "verbs": ["patch"]},
    {"apiGroups": [G], "resources": ["evaluations/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
    {"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create"]},
]
CLUSTER_RULES = [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
                 {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


def service_account_kubeconfig(control_plane, kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that acts as `account`, with a token from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = kube.core.create_namespaced_service_account_token(account, namespace, request).status.token
    admin = yaml.safe_load(control_plane.kubeconfig.read_text())
    admin["users"] = [{"name": account, "user": {"token": token}}]
    admin["contexts"][0]["context"] = {"cluster": admin["clusters"][0]["name"], "user": account, "namespace": namespace}
    path.write_text(yaml.safe_dump(admin))
    return path


def test_an_operator_that_may_not_make_the_runners_role_starts_no_runner_and_names_the_missing_right(control_plane, kube, namespace,
                                                                                                    start_operator, tmp_path):
    results_claim(kube, namespace)
    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    subject = [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]
    kube.rbac.create_namespaced_role(namespace, {"metadata": {"name": "operator"}, "rules": OPERATOR_RULES})
    kube.rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": "operator"}, "subjects": subject,
                                                         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "operator"}})
    cluster_name = f"{namespace}-operator"
    kube.rbac.create_cluster_role({"metadata": {"name": cluster_name}, "rules": CLUSTER_RULES})
    kube.rbac.create_cluster_role_binding({"metadata": {"name": cluster_name}, "subjects": subject,
                                           "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": cluster_name}})
    try:
        kubeconfig = service_account_kubeconfig(control_plane, kube, namespace, "operator", tmp_path / "operator.kubeconfig")
        operator = start_operator(namespace, kubeconfig=kubeconfig, resync_interval="2")
        with serve_in_thread(default_answerer(DATA, 0.7, 3)) as model:
            kube.custom.create_namespaced_custom_object(G, V, namespace, P, evaluation("denied", model.chat_url))

            def refused():
                detail = ((status_of(kube, namespace, "denied").get("evalResults") or [{}])[0].get("details") or [{}])[0]
                return detail if "may not create the runner's Role" in detail.get("message", "") else None
            detail = wait_for(refused, 90, "the refusal in the dataset's message")
            assert detail["status"] == "P" and detail.get("accuracy") is None
            assert "evaluationtaskresults.flageval.io" in detail["message"] and "charts/flageval-operator" in detail["message"]
            assert not kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=denied").items
            events = [e for e in kube.core.list_namespaced_event(namespace).items if e.reason == "RunnerAccessDenied"]
            assert len(events) == 1 and events[0].type == "Warning" and events[0].involved_object.name == "denied"
            assert "may not create the runner's Role" in operator.log()

            # Given the rights, the next look makes the Role and the Evaluation runs to its accuracy.
            kube.rbac.patch_namespaced_role("operator", namespace, {"rules": [
                *OPERATOR_RULES, {"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["create"]}, *RUNNER_RULES]})
            status = finished_status(kube, namespace, "denied", 180)
        detail = status["evalResults"][0]["details"][0]
        assert status["phase"] == "Succeeded" and detail["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 3, 5), json.dumps(status, indent=1)
        assert kube.rbac.read_namespaced_role("flageval-runner", namespace).rules[0].resources == ["evaluationtaskresults"]
        assert len([e for e in kube.core.list_namespaced_event(namespace).items if e.reason == "RunnerAccessDenied"]) == 1
    finally:
        kube.rbac.delete_cluster_role_binding(cluster_name)
        kube.rbac.delete_cluster_role(cluster_name)


def test_a_refusal_that_passes_within_the_grace_costs_the_runner_nothing(control_plane, kube, namespace, tmp_path):
    """A restarting API server refuses for a moment (403 until its authorizer has synced, 404 until it serves
    custom resources): a runner whose right arrives a few seconds after its first refused report goes on,
    reports, and exits 0. The same refusal lasting longer than the grace ends it with exit 3."""
    import os
    import subprocess
    import sys
    import time

    kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "late"}})
    kubeconfig = service_account_kubeconfig(control_plane, kube, namespace, "late", tmp_path / "late.kubeconfig")
    kube.rbac.create_namespaced_role(namespace, {"metadata": {"name": "late"}, "rules": RUNNER_RULES})
    info = {"eval_model": "late-nvidia-origin", "model": "qwen3", "eval_url": "", "num_concurrent": 1}

    def runner(model, task: str, grace: str) -> subprocess.Popen:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "FLAGEVAL_TASK_RESULT": f"{namespace}/{task}",
               "FLAGEVAL_REPORT_REFUSAL_GRACE": grace, "FLAGEVAL_EVAL_INFO": json.dumps({**info, "eval_url": model.chat_url})}
        return subprocess.Popen([sys.executable, "-m", "flageval.cli", "runner", "--dataset", "gsm8k", "--limit", "5",
                                 "--output", str(tmp_path / task)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    with serve_in_thread(default_answerer(DATA, 0.7, 4), latency=0.5) as model:
        proc = runner(model, "granted", "120")
        wait_for(lambda: (tmp_path / "granted").exists(), 60, "the runner to start")
        time.sleep(4)  # refused meanwhile: no RoleBinding yet
        kube.rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": "late"}, "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "late"},
                                                             "subjects": [{"kind": "ServiceAccount", "name": "late", "namespace": namespace}]})
        out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "refused, trying again for 120 s before giving up" in out and "HTTP 403" in out, out
    reported = kube.custom.get_namespaced_custom_object(G, V, namespace, "evaluationtaskresults", "granted")
    assert reported["result"]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 4, 5), reported

    kube.rbac.delete_namespaced_role_binding("late", namespace)
    with serve_in_thread(default_answerer(DATA, 0.7, 4)) as model:
        started = time.monotonic()
        proc = runner(model, "refused", "3")
        out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, out
    assert "the runner may not" in out and time.monotonic() - started < 120, out
