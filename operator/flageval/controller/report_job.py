"""The Job that writes an Evaluation's HTML report beside its results once it has finished: `flageval report`
over its services' directories on the results volume, in the runner image. A pure builder.

It carries no `flageval.io/evaluation` label, so the controller's indices of runner Jobs never see it; it
is owned by the Evaluation (deleted with it) and removed an hour after it finished."""

from __future__ import annotations

from typing import Any

import kopf

from flageval.api.evaluation import EvaluationSpec
from flageval.controller.jobs import MANAGED_BY, job_name, results_dir
from flageval.controller.settings import Settings
from flageval.results import REPORT_FILE, evaluation_dir

LABEL_REPORT_OF = "flageval.io/report-of"


def report_path(settings: Settings, evaluation: dict[str, Any]) -> str:
    meta = evaluation["metadata"]
    return f"{evaluation_dir(settings.volume_mount_path, meta['namespace'], meta['name'], meta['uid'])}/{REPORT_FILE}"


def build_report_job(evaluation: dict[str, Any], settings: Settings) -> dict[str, Any]:
    meta = evaluation["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = EvaluationSpec.model_validate(evaluation["spec"])
    dirs = [results_dir(settings, namespace, name, meta["uid"], info.eval_model) for info in spec.eval_infos]
    command = ["flageval", "report", *dirs, "--out", report_path(settings, evaluation),
               "--tolerance", f"{spec.tolerance:g}", "--title", f"flageval report: {namespace}/{name}"]
    labels = {**MANAGED_BY, "app.kubernetes.io/component": "report", LABEL_REPORT_OF: name}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.runner_service_account,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": settings.results_claim}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        "containers": [{
            "name": "report",
            "image": settings.runner_image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": command,
            "volumeMounts": [{"name": "results", "mountPath": settings.volume_mount_path}, {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    }
    if settings.tolerations:
        pod_spec["tolerations"] = settings.tolerations
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(name, "report", "html"), "namespace": namespace, "labels": labels},
        "spec": {"backoffLimit": 2, "ttlSecondsAfterFinished": 3600,
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }
    kopf.append_owner_reference(job, owner=evaluation)
    return job
