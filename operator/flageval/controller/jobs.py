"""Job manifests for an Evaluation: one per (evalInfo, dataset). Pure functions of the Evaluation and settings."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import kopf

from flageval.api.evaluation import EvalInfoSpec, EvaluationSpec
from flageval.api.urlpolicy import UrlPolicy, UrlRefused, url_refusal
from flageval.controller.settings import Settings
from flageval.datasets import default_data_dir, suite
from flageval.results import evaluation_dir
from flageval.runner import EXIT_CONFIG, EXIT_TERMINATED

LABEL_EVALUATION = "flageval.io/evaluation"
LABEL_EVAL_MODEL = "flageval.io/eval-model"
LABEL_DATASET = "flageval.io/dataset"
MANAGED_BY = {"app.kubernetes.io/managed-by": "flageval-operator", "app.kubernetes.io/component": "runner"}
CONTAINER = "runner"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TASKS_MOUNT = "/etc/flageval/tasks"  # one folder per ConfigMap of spec.taskConfigMaps
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"  # Kueue manages a Job with this label, in that LocalQueue


def datasets_of(spec: EvaluationSpec) -> list[str]:
    """spec.datasets, else the mode's suite of the domain: for MM and EV by default those whose files are in
    the benchmark directory (FLAGEVAL_DATA_DIR, the runners' too; the operator runs from the runner image).
    Raises DatasetError for an unknown domain or mode."""
    if spec.datasets:
        return list(spec.datasets)
    data_dir = default_data_dir()
    return suite(spec.domain.value, spec.mode, data_dir if data_dir.is_dir() else None)


def job_name(evaluation: str, eval_model: str, dataset: str) -> str:
    """Deterministic, a DNS label (≤ 63), unique per triple: a readable prefix and a hash of the exact names."""
    digest = hashlib.sha256(f"{evaluation}\0{eval_model}\0{dataset}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{evaluation}-{eval_model}-{dataset}".lower())
    readable = re.sub(r"-+", "-", readable)[: 63 - len(digest) - 1].strip("-")
    return f"{readable}-{digest}" if readable else digest


def results_dir(settings: Settings, namespace: str, evaluation: str, uid: str, eval_model: str) -> str:
    """One directory per Evaluation object (results.evaluation_dir), one per service in it."""
    return f"{evaluation_dir(settings.volume_mount_path, namespace, evaluation, uid)}/{eval_model}"


def job_labels(settings: Settings, evaluation: str, info: EvalInfoSpec, dataset: str, region: str) -> dict[str, str]:
    return {**MANAGED_BY, LABEL_EVALUATION: evaluation, LABEL_EVAL_MODEL: info.eval_model, LABEL_DATASET: dataset,
            settings.vendor_label: info.chip_vendor, settings.region_label: region}


def queue_of(spec: EvaluationSpec, settings: Settings) -> str | None:
    """The Kueue LocalQueue the Evaluation's Jobs queue in; None without Kueue."""
    return (spec.queue_name or settings.kueue_queue_name) if settings.kueue_enabled else None


def _api_key_env(info: EvalInfoSpec) -> dict[str, Any]:
    ref = info.api_key_secret_ref
    if ref is None:
        return {"name": "FLAGEVAL_API_KEY", "value": "EMPTY"}
    return {"name": "FLAGEVAL_API_KEY", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def build_job(evaluation: dict[str, Any], spec: EvaluationSpec, info: EvalInfoSpec, dataset: str, settings: Settings,
              policy_env: list[dict[str, str]]) -> dict[str, Any]:
    """The runner Job of one (evalInfo, dataset) of `evaluation` (the object as the API returns it; `spec`, its
    validated spec; `policy_env`, the URL policy's variables)."""
    meta = evaluation["metadata"]
    namespace, ev_name = meta["namespace"], meta["name"]
    name = job_name(ev_name, info.eval_model, dataset)
    labels = job_labels(settings, ev_name, info, dataset, spec.region)
    eval_info = info.to_eval_info().model_dump(mode="json", exclude={"api_key"})

    command = ["flageval", "runner", "--dataset", dataset,
               "--output", results_dir(settings, namespace, ev_name, meta["uid"], info.eval_model),
               "--cache-dir", f"{settings.volume_mount_path}/cache"]
    if spec.limit is not None:
        command += ["--limit", str(spec.limit)]
    if settings.data_dir:
        command += ["--data-dir", settings.data_dir]
    if settings.runner_metrics_port:
        command += ["--metrics-port", str(settings.runner_metrics_port)]
    for config_map in spec.task_config_maps or []:
        command += ["--include-path", f"{TASKS_MOUNT}/{config_map}"]
    if spec.allow_code_execution:
        command += ["--allow-code-execution"]

    queue = queue_of(spec, settings)
    job_meta_labels = {**labels, LABEL_QUEUE: queue} if queue else labels
    # The runner's task result is owned (garbage-collected with the Evaluation) but not controlled.
    report_meta = {"labels": labels, "ownerReferences": [kopf.build_owner_reference(evaluation, controller=False, block_owner_deletion=False)]}
    env = [
        {"name": "FLAGEVAL_EVAL_INFO", "value": json.dumps(eval_info, sort_keys=True)},
        _api_key_env(info),
        {"name": "FLAGEVAL_TASK_RESULT", "value": f"{namespace}/{name}"},
        {"name": "FLAGEVAL_TASK_RESULT_META", "value": json.dumps(report_meta, sort_keys=True)},
        {"name": "FLAGEVAL_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *policy_env,
    ]
    # The service-account token is projected explicitly (automount off) so its mount precedes /tmp's.
    volumes = [
        {"name": "kube-api-access", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "results", "persistentVolumeClaim": {"claimName": settings.results_claim}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [
        {"name": "kube-api-access", "mountPath": SA_MOUNT, "readOnly": True},
        {"name": "results", "mountPath": settings.volume_mount_path},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for i, config_map in enumerate(spec.task_config_maps or []):  # users' own lm-eval task files
        volumes.append({"name": f"tasks-{i}", "configMap": {"name": config_map}})
        mounts.append({"name": f"tasks-{i}", "mountPath": f"{TASKS_MOUNT}/{config_map}", "readOnly": True})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.runner_service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "nodeSelector": {settings.vendor_label: info.chip_vendor, settings.region_label: spec.region},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": volumes,
        "containers": [{
            "name": CONTAINER,
            "image": settings.runner_image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": command,
            "env": env,
            "resources": settings.resources,
            "volumeMounts": mounts,
            **({"ports": [{"name": "metrics", "containerPort": settings.runner_metrics_port}]} if settings.runner_metrics_port else {}),
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    }
    if settings.tolerations:
        pod_spec["tolerations"] = settings.tolerations
    if settings.affinity:
        pod_spec["affinity"] = settings.affinity
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_meta_labels},
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "completions": 1,
            "parallelism": 1,
            # Queued, a Job starts suspended: Kueue resumes it once admitted (its webhook, when
            # registered, would do the same).
            "suspend": True if queue else spec.suspend,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_CONFIG]}},
                # A pod stopped by suspend, eviction or preemption is no failure of the run.
                {"action": "Ignore", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_TERMINATED]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    # Owned and controlled by the Evaluation: deleted with it. Not kopf.adopt, which would also copy the
    # Evaluation's labels onto the Job, Argo CD's tracking label among them.
    kopf.append_owner_reference(job, owner=evaluation)
    return job


def refused_urls(spec: EvaluationSpec, policy: UrlPolicy) -> str | None:
    """Why the policy refuses the Evaluation's evalUrls (each as written: the runner checks the addresses
    a host name resolves to when it connects), or None."""
    refusals = [f"spec.evalInfos[{i}].evalUrl {info.eval_url}: {why}" for i, info in enumerate(spec.eval_infos)
                if (why := url_refusal(info.eval_url, policy))]
    return "; ".join(refusals) or None


def build_jobs(evaluation: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """Every Job of an Evaluation, evalInfo by evalInfo, in dataset order. Raises UrlRefused when an
    evalUrl is refused: then no Job at all."""
    spec = EvaluationSpec.model_validate(evaluation["spec"])
    policy = settings.url_policy
    refusal = refused_urls(spec, policy)
    if refusal:
        raise UrlRefused(refusal)
    policy_env = [{"name": name, "value": value} for name, value in policy.env().items()]
    return [build_job(evaluation, spec, info, dataset, settings, policy_env) for info in spec.eval_infos for dataset in datasets_of(spec)]


# What a runner may do with the API: report on its own task, nothing else.
RUNNER_RULES = [{"apiGroups": ["flageval.io"], "resources": ["evaluationtaskresults"], "verbs": ["get", "create", "patch"]}]


def runner_access(namespace: str, settings: Settings) -> list[dict[str, Any]]:
    """The runner's ServiceAccount, a Role of exactly RUNNER_RULES and their RoleBinding in `namespace`, all
    named after the ServiceAccount. A namespaced Role, so nothing outside the namespace has to exist first;
    the label finds them for cleanup (`kubectl delete sa,role,rolebinding -l app.kubernetes.io/managed-by=flageval-operator`)."""
    name = settings.runner_service_account
    meta = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": meta, "rules": RUNNER_RULES},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]
