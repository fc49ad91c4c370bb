"""Kueue (hack/control-plane kueue) on the local control plane: its webhooks, its admission within a
quota, and Jobs outside its queues left alone."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException
from support.cluster import wait_for

pytestmark = pytest.mark.cluster
KUEUE = ("kueue.x-k8s.io", "v1beta2")
NVIDIA_BJ = {"flageval.io/chip-vendor": "nvidia", "flageval.io/region": "bj"}


def queued_job(name: str, command: str, queue: str | None) -> dict:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"backoffLimit": 0, "suspend": False, "template": {"spec": {
                "restartPolicy": "Never", "nodeSelector": NVIDIA_BJ, "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command],
                                "resources": {"requests": {"cpu": "100m"}}}]}}}}


def condition(kube, namespace, name, kind):
    status = kube.batch.read_namespaced_job_status(name, namespace).status
    return any(c.type == kind and c.status == "True" for c in status.conditions or [])


@pytest.fixture
def one_slot_queue(kube, kueue, namespace):
    """A ClusterQueue with room for one pod of flavor nvidia-bj, and a LocalQueue to it in `namespace`."""
    name = f"one-{namespace}"
    kube.custom.create_cluster_custom_object(*KUEUE, "resourceflavors", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": name}, "spec": {"nodeLabels": NVIDIA_BJ}})
    kube.custom.create_cluster_custom_object(*KUEUE, "clusterqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["pods", "cpu"], "flavors": [
            {"name": name, "resources": [{"name": "pods", "nominalQuota": 1}, {"name": "cpu", "nominalQuota": 1}]}]}]}})
    kube.custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "q"}, "spec": {"clusterQueue": name}})
    yield "q"
    kube.custom.delete_namespaced_custom_object(*KUEUE, namespace, "localqueues", "q")
    kube.custom.delete_cluster_custom_object(*KUEUE, "clusterqueues", name)
    kube.custom.delete_cluster_custom_object(*KUEUE, "resourceflavors", name)


def test_kueue_suspends_queued_jobs_and_admits_them_one_at_a_time(kube, namespace, one_slot_queue):
    # Created unsuspended: Kueue's Job webhook (served on 127.0.0.1) suspends them at creation.
    # The first runs long enough that the second is still held when it is looked at, however loaded the machine.
    first = kube.batch.create_namespaced_job(namespace, queued_job("first", "sleep 15", one_slot_queue))
    assert first.spec.suspend is True
    kube.batch.create_namespaced_job(namespace, queued_job("second", "true", one_slot_queue))

    def admitted(name):
        return kube.batch.read_namespaced_job(name, namespace).spec.suspend is False
    wait_for(lambda: admitted("first"), 60, "the first Job admitted")
    assert not admitted("second")
    workloads = kube.custom.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
    second = next(w for w in workloads if w["metadata"]["ownerReferences"][0]["name"] == "second")
    reserved = next(c for c in second["status"]["conditions"] if c["type"] == "QuotaReserved")
    assert reserved["status"] == "False" and "insufficient unused quota for pods" in reserved["message"]
    # One slot: the second runs once the first has finished, and both complete on the node agent's node.
    wait_for(lambda: condition(kube, namespace, "first", "Complete"), 120, "the first Job Complete")
    wait_for(lambda: condition(kube, namespace, "second", "Complete"), 120, "the second Job Complete")
    pods = kube.core.list_namespaced_pod(namespace, label_selector="job-name=second").items
    assert pods[0].spec.node_name == "node-nvidia-bj"


def test_jobs_outside_kueues_queues_run_as_before(kube, kueue, namespace):
    created = kube.batch.create_namespaced_job(namespace, queued_job("plain", "true", None))
    assert created.spec.suspend is False
    wait_for(lambda: condition(kube, namespace, "plain", "Complete"), 120, "the plain Job Complete")


def test_kueue_refuses_a_malformed_queue_name(kube, kueue, namespace):
    # Its validating webhook answers: the API server calls it by URL with the local CA.
    with pytest.raises(ApiException) as refused:
        kube.batch.create_namespaced_job(namespace, queued_job("bad", "true", "Not_A_Name"))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403 and message.startswith('admission webhook "vjob.kb.io" denied the request'), message
    assert "kueue.x-k8s.io/queue-name" in message and "Not_A_Name" in message
