"""The few calls the controller makes to the API server, each on a thread (the Kubernetes client blocks).
The loop depends on this small interface only, so its tests can record the calls instead."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException, RESTResponse

from flageval.api.evaluation import GROUP, PLURAL, VERSION
from flageval.controller.jobs import LABEL_EVALUATION, runner_access
from flageval.controller.kueue import GROUP as KUEUE_GROUP
from flageval.controller.kueue import VERSION as KUEUE_VERSION
from flageval.controller.kueue import WORKLOADS
from flageval.controller.settings import Settings

log = logging.getLogger("flageval.operator")

PATCHES_IN_FLIGHT = 8  # status patches sent at once, on their own threads: the loop never waits for one
CREATES_IN_FLIGHT = 8  # Job creations sent at once, likewise
REQUEST_TIMEOUT = 60  # seconds, as kopf's own calls (handlers.py)


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_status(exc: ApiException) -> dict[str, Any]:
    """The Status object the API server answered with (reason, message…), or {}."""
    try:
        answer = json.loads(exc.body)
    except (TypeError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


class KubeApi:
    def __init__(self, settings: Settings) -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.settings = settings
        self.batch, self.core = client.BatchV1Api(), client.CoreV1Api()
        self.custom, self.rbac = client.CustomObjectsApi(), client.RbacAuthorizationV1Api()
        self.patch_pool = ThreadPoolExecutor(PATCHES_IN_FLIGHT, thread_name_prefix="status-patch")
        self.create_pool = ThreadPoolExecutor(CREATES_IN_FLIGHT, thread_name_prefix="job-create")
        self.rbac_done: set[str] = set()

    def close(self) -> None:
        for pool in (self.patch_pool, self.create_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def _json_call(self, method: str, path: str, body: dict[str, Any], content_type: str = "application/json") -> dict[str, Any]:
        """One call with a JSON body, answered with JSON, through the client's authenticated connection pool but
        not its generated methods: those validate the body into model classes and serialize them back (a
        fifth of the operator's CPU while it created a thousand Evaluations' Jobs). Raises ApiException as
        the server refuses."""
        client_ = self.batch.api_client
        method, url, headers, _, _ = client_.param_serialize(
            method=method, resource_path=path, header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"])
        # Straight to the pool, with orjson: the client's rest layer encodes with json (15× orjson's time for a Job).
        response = client_.rest_client.pool_manager.request(method, url, body=orjson.dumps(body), headers=headers,
                                                            timeout=urllib3.Timeout(total=REQUEST_TIMEOUT), preload_content=False)
        data = response.data
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=RESTResponse(response), body=data.decode("utf-8", "replace"), data=None)
        return orjson.loads(data)

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """The created Job as the server's JSON. Raises ApiException as the server refuses."""
        return await asyncio.get_running_loop().run_in_executor(
            self.create_pool, self._json_call, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", manifest)

    async def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        await asyncio.to_thread(self.batch.patch_namespaced_job, name, namespace, {"spec": {"suspend": suspend}})

    async def activate_workload(self, namespace: str, name: str, active: bool) -> None:
        """Have Kueue run or stop a queued Job through its Workload (Kueue owns the Job's suspend)."""
        await asyncio.to_thread(self.custom.patch_namespaced_custom_object, KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOADS, name,
                                {"spec": {"active": active}})

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """The Evaluation as patched. Raises ApiException (404 when it is gone)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.patch_pool, self._json_call, "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
            {"status": status}, "application/merge-patch+json")

    async def runner_pods(self, namespace: str) -> list[dict[str, Any]]:
        # resourceVersion 0: from the API server's watch cache, not a quorum read of etcd (notes may trail by a moment)
        response = await asyncio.to_thread(self.core.list_namespaced_pod, namespace, label_selector=LABEL_EVALUATION,
                                           resource_version="0", _preload_content=False)
        return orjson.loads(response.data).get("items") or []

    async def post_event(self, body: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        meta = body["metadata"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message[:1024], "type": kind,
            "source": {"component": "flageval-operator"}, "reportingComponent": "flageval-operator",
            "firstTimestamp": now_text(), "lastTimestamp": now_text(), "count": 1,
        }
        try:
            await asyncio.to_thread(self.core.create_namespaced_event, meta["namespace"], event)
        except ApiException as exc:
            log.warning("could not record event %s on %s/%s: HTTP %s", reason, meta["namespace"], meta["name"], exc.status)

    async def ensure_runner_access(self, namespace: str) -> str | None:
        """The runner's ServiceAccount, Role and RoleBinding (jobs.runner_access) in a namespace, once.
        Returns why they cannot be made (the operator lacks a right), or None."""
        s = self.settings
        if not s.manage_runner_rbac or namespace in self.rbac_done:
            return None
        creates = {"ServiceAccount": self.core.create_namespaced_service_account, "Role": self.rbac.create_namespaced_role,
                   "RoleBinding": self.rbac.create_namespaced_role_binding}
        for body in runner_access(namespace, s):
            try:
                await asyncio.to_thread(creates[body["kind"]], namespace, body)
            except ApiException as exc:
                if exc.status == 409:  # made earlier, by this operator or by hand: kept as it is
                    continue
                if exc.status in (401, 403):
                    return (f"the operator may not create the runner's {body['kind']} {body['metadata']['name']} in {namespace} "
                            f"(HTTP {exc.status}: {api_status(exc).get('message') or exc.reason}); install with the Helm chart "
                            f"(charts/flageval-operator), which grants it, or set FLAGEVAL_MANAGE_RUNNER_RBAC=false and create yourself a "
                            f"ServiceAccount, a Role allowing get, create, patch on evaluationtaskresults.flageval.io and a RoleBinding, "
                            f"each named {s.runner_service_account}")
                raise
        self.rbac_done.add(namespace)
        return None
