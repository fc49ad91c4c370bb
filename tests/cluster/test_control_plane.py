"""The local control plane behaves as Kubernetes: CRDs with CEL, scheduling, Jobs, volumes, GC."""

from __future__ import annotations

import json
import sys
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.cluster import wait_for

pytestmark = pytest.mark.cluster

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.flageval.io"},
    "spec": {
        "group": "test.flageval.io",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                                         {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "description": "What the widget should be.",
                         "x-kubernetes-validations": [{"rule": "self.size <= self.max", "message": "size must not exceed max"},
                                                      {"rule": "self.size == oldSelf.size", "message": "size is immutable"}],
                         "properties": {"size": {"type": "integer", "description": "How big."}, "max": {"type": "integer", "default": 10},
                                        "url": {"type": "string", "x-kubernetes-validations": [{"rule": "isURL(self)", "message": "url must be a URL"}]}}},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}},
        }],
    },
}


def job(name: str, command: str, *, selector: dict | None = None, backoff: int = 0, suspend: bool = False, owner=None, env=None, volumes=None, mounts=None) -> dict:
    meta = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": {"backoffLimit": backoff, "suspend": suspend, "template": {"spec": {
            "restartPolicy": "Never", "nodeSelector": selector or {}, "terminationGracePeriodSeconds": 2,
            "volumes": volumes or [],
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command], "env": env or [], "volumeMounts": mounts or []}],
        }}},
    }


def job_condition(kube, ns, name, kind):
    status = kube.batch.read_namespaced_job_status(name, ns).status
    return any(c.type == kind and c.status == "True" for c in status.conditions or [])


def pods_of(kube, ns, name):
    return kube.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items


@pytest.fixture(scope="module")
def widget_crd(kube):
    try:
        kube.apiext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in kube.apiext.read_custom_resource_definition("widgets.test.flageval.io").status.conditions or []), 30, "CRD established")
    return "widgets"


def widget(name, size, max_=None, url=None):
    spec = {"size": size}
    if max_ is not None:
        spec["max"] = max_
    if url is not None:
        spec["url"] = url
    return {"apiVersion": "test.flageval.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_crd_cel_rules_defaults_status_and_printer_columns(control_plane, kube, namespace, widget_crd):
    created = wait_for(lambda: kube.custom.create_namespaced_custom_object("test.flageval.io", "v1", namespace, "widgets", widget("ok", 3)), 30, "create")
    assert created["spec"]["max"] == 10  # default applied by the API server
    with pytest.raises(ApiException) as refused:
        kube.custom.create_namespaced_custom_object("test.flageval.io", "v1", namespace, "widgets", widget("big", 30))
    assert refused.value.status == 422 and "size must not exceed max" in refused.value.body
    with pytest.raises(ApiException) as refused:
        kube.custom.create_namespaced_custom_object("test.flageval.io", "v1", namespace, "widgets", widget("u", 1, url="not a url"))
    assert "url must be a URL" in refused.value.body
    with pytest.raises(ApiException) as refused:
        kube.custom.patch_namespaced_custom_object("test.flageval.io", "v1", namespace, "widgets", "ok", {"spec": {"size": 4}})
    assert "size is immutable" in refused.value.body
    kube.custom.patch_namespaced_custom_object_status("test.flageval.io", "v1", namespace, "widgets", "ok", {"status": {"phase": "Shiny"}})
    table = control_plane.kubectl("get", "wd", "-n", namespace).stdout
    assert table.split()[:3] == ["NAME", "SIZE", "PHASE"] and "Shiny" in table


def test_kubectl_apply_get_describe_explain(control_plane, namespace, widget_crd):
    manifest = json.dumps(widget("applied", 2))
    assert "created" in control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest).stdout
    assert "unchanged" in control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest).stdout
    assert "applied" in control_plane.kubectl("get", "widgets", "-n", namespace).stdout
    assert "Size:" in control_plane.kubectl("describe", "widget", "applied", "-n", namespace).stdout
    explained = control_plane.kubectl("explain", "widget.spec").stdout
    assert "What the widget should be." in explained and "How big." in explained
    refused = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(widget("bad", 99)), check=False)
    assert refused.returncode != 0 and "size must not exceed max" in refused.stderr


def test_job_lands_on_a_matching_node_and_completes(kube, namespace):
    selector = {"flageval.io/chip-vendor": "nvidia", "flageval.io/region": "sz"}
    kube.batch.create_namespaced_job(namespace, job("hello", "echo hello from $HOSTNAME", selector=selector))
    wait_for(lambda: job_condition(kube, namespace, "hello", "Complete"), 60, "Job Complete")
    pod = pods_of(kube, namespace, "hello")[0]
    assert pod.spec.node_name == "node-nvidia-sz"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_unsatisfiable_selector_stays_pending(kube, namespace):
    kube.batch.create_namespaced_job(namespace, job("nowhere", "true", selector={"flageval.io/chip-vendor": "cambricon"}))
    pod = wait_for(lambda: (pods_of(kube, namespace, "nowhere") or [None])[0], 30, "pod created")
    wait_for(lambda: any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in kube.core.read_namespaced_pod(pod.metadata.name, namespace).status.conditions or []), 30, "Unschedulable")
    assert kube.core.read_namespaced_pod(pod.metadata.name, namespace).status.phase == "Pending"


def test_failing_command_is_retried_per_backoff_limit_then_fails(kube, namespace):
    kube.batch.create_namespaced_job(namespace, job("flaky", "exit 3", backoff=1))
    wait_for(lambda: job_condition(kube, namespace, "flaky", "Failed"), 90, "Job Failed")
    pods = pods_of(kube, namespace, "flaky")
    assert len(pods) == 2  # the first try and one retry
    assert all(p.status.container_statuses[0].state.terminated.exit_code == 3 for p in pods)


def _process_running(control_plane, marker: str) -> bool:
    """Whether a process whose command line holds `marker` runs on this machine."""
    from pathlib import Path

    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def test_suspend_kills_the_process_and_resume_starts_it_again(control_plane, kube, namespace):
    marker = f"sleep-{uuid.uuid4().hex[:6]}"
    kube.batch.create_namespaced_job(namespace, job("long", f"sleep 300; echo {marker}"))
    wait_for(lambda: _process_running(control_plane, marker), 60, "the process to run")
    first = pods_of(kube, namespace, "long")[0].metadata.name
    kube.batch.patch_namespaced_job("long", namespace, {"spec": {"suspend": True}})
    wait_for(lambda: not pods_of(kube, namespace, "long"), 60, "the pod to go away")
    assert not _process_running(control_plane, marker)
    kube.batch.patch_namespaced_job("long", namespace, {"spec": {"suspend": False}})
    wait_for(lambda: _process_running(control_plane, marker), 60, "the process to run again")
    assert pods_of(kube, namespace, "long")[0].metadata.name != first
    kube.batch.delete_namespaced_job("long", namespace, propagation_policy="Foreground")
    wait_for(lambda: not _process_running(control_plane, marker), 60, "the process to stop with its Job")


def shared_claim(kube, namespace, name="shared"):
    kube.core.create_persistent_volume({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{name}"},
                                        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                                                 "hostPath": {"path": f"/tmp/{namespace}-{name}"}, "claimRef": {"namespace": namespace, "name": name}}})
    kube.core.create_namespaced_persistent_volume_claim(namespace, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                                                                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: kube.core.read_namespaced_persistent_volume_claim(name, namespace).status.phase == "Bound", 60, "PVC Bound")


def test_secret_env_and_a_claim_shared_between_pods(kube, namespace):
    kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"token": "s3cret"}))
    shared_claim(kube, namespace)
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]
    mounts = [{"name": "data", "mountPath": "/flageval-test-data"}]
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
           {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    kube.batch.create_namespaced_job(namespace, job("writer", 'echo "$TOKEN" > /flageval-test-data/token && echo "$POD" > /flageval-test-data/writer', env=env, volumes=volumes, mounts=mounts))
    wait_for(lambda: job_condition(kube, namespace, "writer", "Complete"), 60, "writer Complete")
    kube.batch.create_namespaced_job(namespace, job("reader", 'test "$(cat /flageval-test-data/token)" = s3cret && grep -q "^writer-" /flageval-test-data/writer', volumes=volumes, mounts=mounts))
    wait_for(lambda: job_condition(kube, namespace, "reader", "Complete") or job_condition(kube, namespace, "reader", "Failed"), 60, "reader finished")
    assert job_condition(kube, namespace, "reader", "Complete")


def test_a_pod_waits_pending_for_a_secret_that_appears_later(kube, namespace):
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    kube.batch.create_namespaced_job(namespace, job("late", 'test "$TOKEN" = s3cret', env=env))

    def waiting():
        pods = pods_of(kube, namespace, "late")
        statuses = pods[0].status.container_statuses or [] if pods else []
        return pods[0] if statuses and statuses[0].state.waiting else None
    pod = wait_for(waiting, 60, "the pod to wait for its Secret")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"
    assert 'secrets "late" not found' in pod.status.container_statuses[0].state.waiting.message
    kube.core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="late"), string_data={"token": "s3cret"}))
    wait_for(lambda: job_condition(kube, namespace, "late", "Complete") or job_condition(kube, namespace, "late", "Failed"), 60, "the Job to finish")
    assert job_condition(kube, namespace, "late", "Complete")
    assert len(pods_of(kube, namespace, "late")) == 1  # the same pod ran once its Secret was there


def test_pods_reach_the_api_with_in_cluster_config(kube, namespace):
    kube.rbac.create_namespaced_role_binding(namespace, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "view"},
                                                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                                                         "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    script = f"from kubernetes import client, config; config.load_incluster_config(); assert client.CoreV1Api().read_namespace('{namespace}').metadata.name == '{namespace}'"
    spec = job("incluster", "true")
    spec["spec"]["template"]["spec"]["containers"][0]["command"] = [sys.executable, "-c", script]
    kube.batch.create_namespaced_job(namespace, spec)
    wait_for(lambda: job_condition(kube, namespace, "incluster", "Complete") or job_condition(kube, namespace, "incluster", "Failed"), 60, "in-cluster Job finished")
    assert job_condition(kube, namespace, "incluster", "Complete")


def test_deleting_an_owner_collects_its_jobs_and_namespaces_delete(kube, node_agent):
    ns = f"gc-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    owner = kube.core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    kube.batch.create_namespaced_job(ns, job("child", "sleep 300", owner=ref))
    wait_for(lambda: pods_of(kube, ns, "child"), 30, "child pod")
    kube.core.delete_namespaced_config_map("owner", ns)
    wait_for(lambda: not kube.batch.list_namespaced_job(ns).items, 60, "the garbage collector to delete the Job")
    kube.core.delete_namespace(ns)

    def gone():
        try:
            kube.core.read_namespace(ns)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(gone, 90, "the namespace to be deleted")
