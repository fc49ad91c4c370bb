"""The Kubernetes backend: one Evaluation object per request (the request_id is its name); the operator
runs it and writes its status, which this backend reads back.

API keys go into a Secret the Evaluation owns (deleted with it) and are referenced from the spec
(`apiKeySecretRef`); they never enter the spec. Stop and resume set `spec.suspend`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from flageval.api import Status, format_validation_error
from flageval.api.evaluation import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    DatasetDetail,
    EvalInfoSpec,
    EvaluationSpec,
    EvaluationStatus,
    Phase,
    SecretKeyRef,
)
from flageval.api.rest import EvaluationRequest
from flageval.backends.base import (
    BackendError,
    DatasetView,
    EvaluationView,
    ServiceView,
    UnknownRequest,
    new_request_id,
    valid_request_id,
)
from flageval.results import evaluation_dir

log = logging.getLogger("flageval.backends.kube")

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CREATED_BY = {"app.kubernetes.io/created-by": "flageval-shim"}
FINISHED_PHASES = (Phase.SUCCEEDED.value, Phase.FAILED.value)
REQUEST_TIMEOUT = 10.0  # seconds per API call: past it the client gets its answer (err_code 1), not a hang


@dataclass
class KubeSettings:
    kubeconfig: str | None = None
    namespace: str | None = None
    tolerance: float = 0.5
    limit: int | None = None  # cap on samples per dataset for every evaluation (smoke deployments)
    cache_seconds: float = 1.0  # answers for one evaluation are read at most this often (many clients poll)
    results_path: str | None = None  # where this process mounts the operator's results volume (for reports)


def secret_name(request_id: str) -> str:
    return f"{request_id}-api-keys"


class KubeBackend:
    name = "kubernetes"
    data_dir = None  # the runner image's

    def __init__(self, settings: KubeSettings, api_client: client.ApiClient | None = None):
        self.settings = settings
        self._api_client = api_client
        self.namespace = settings.namespace or ""
        self.custom: client.CustomObjectsApi | None = None
        self.core: client.CoreV1Api | None = None
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def open(self) -> None:
        api = self._api_client
        if api is None:
            try:
                if self.settings.kubeconfig:
                    api = config.new_client_from_config(self.settings.kubeconfig)
                else:
                    try:
                        config.load_incluster_config()
                    except config.ConfigException:
                        config.load_kube_config()
                    api = client.ApiClient()
            except (config.ConfigException, OSError) as exc:
                raise BackendError(f"cannot load the Kubernetes configuration: {exc}") from None
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        if not self.namespace:
            self.namespace = self._default_namespace()
        try:
            await asyncio.to_thread(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, limit=1)
        except ApiException as exc:
            reason = "the Evaluation CRD is not installed" if exc.status == 404 else f"HTTP {exc.status} {exc.reason}"
            raise BackendError(f"cannot list Evaluations in namespace {self.namespace}: {reason}") from None
        except Exception as exc:  # noqa: BLE001 - unreachable API server: one line
            raise BackendError(f"cannot reach the Kubernetes API: {exc}") from None
        log.info("serving Evaluations in namespace %s", self.namespace)

    def _default_namespace(self) -> str:
        if SA_NAMESPACE.exists():
            return SA_NAMESPACE.read_text().strip()
        try:
            _, current = config.list_kube_config_contexts(config_file=self.settings.kubeconfig)
            return (current or {}).get("context", {}).get("namespace") or "default"
        except (config.ConfigException, OSError):
            return "default"

    async def aclose(self) -> None:
        pass

    async def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        """One API call; the API server unreachable or not answering in time is an error answer, not a 500."""
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except (HTTPError, OSError) as exc:
            raise BackendError(f"cannot reach the Kubernetes API: {type(exc).__name__}: {exc}"[:500]) from None

    # -- the API ----------------------------------------------------------------------------------

    async def start(self, request: EvaluationRequest, datasets: list[str]) -> EvaluationView:
        name = new_request_id()
        keys = {info.eval_model: info.api_key for info in request.eval_infos if info.api_key != "EMPTY"}
        limits = [x for x in (request.limit, self.settings.limit) if x is not None]
        try:
            spec = EvaluationSpec(
                domain=request.domain,
                mode=request.mode,
                datasets=request.datasets,
                limit=min(limits) if limits else None,
                region=request.region,
                special_event=request.special_event,
                user_id=request.user_id,
                tolerance=self.settings.tolerance,
                eval_infos=[
                    EvalInfoSpec.model_validate({
                        **info.model_dump(exclude={"api_key"}),
                        "api_key_secret_ref": SecretKeyRef(name=secret_name(name), key=info.eval_model) if info.eval_model in keys else None,
                    })
                    for info in request.eval_infos
                ],
            )
        except ValidationError as exc:  # bounds only the object has (e.g. the length of eval_url)
            raise BackendError(format_validation_error(exc)) from None
        # The Secret first, so that no runner pod waits for it; owned by the Evaluation once that exists.
        if keys:
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": secret_name(name), "labels": {**CREATED_BY, "flageval.io/evaluation": name}},
                      "stringData": keys}
            try:
                await self._call(self.core.create_namespaced_secret, self.namespace, secret)
            except ApiException as exc:
                raise BackendError(f"cannot store the API keys: HTTP {exc.status} {exc.reason}") from None
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "labels": dict(CREATED_BY)},
                "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
        try:
            created = await self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if keys:
                await self._delete_secret(name)
            raise BackendError(f"the API server refused the Evaluation: HTTP {exc.status} {_reason(exc)}") from None
        if keys:
            owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": created["metadata"]["uid"],
                     "controller": False, "blockOwnerDeletion": False}
            try:
                await self._call(self.core.patch_namespaced_secret, secret_name(name), self.namespace, {"metadata": {"ownerReferences": [owner]}})
            except ApiException as exc:
                log.warning("could not make Evaluation %s own its key Secret: HTTP %s", name, exc.status)
        log.info("evaluation %s created in %s: %d service(s) × %s", name, self.namespace, len(request.eval_infos), ",".join(datasets))
        return self._view(created, datasets)

    async def _delete_secret(self, name: str) -> None:
        try:
            await self._call(self.core.delete_namespaced_secret, secret_name(name), self.namespace)
        except ApiException:
            log.warning("could not delete the key Secret of %s", name)

    async def _get(self, request_id: str, fresh: bool = False) -> dict[str, Any]:
        if not valid_request_id(request_id):
            raise UnknownRequest(request_id)
        now = time.monotonic()
        cached = self._cache.get(request_id)
        if cached is not None and not fresh and now - cached[0] < self.settings.cache_seconds:
            return cached[1]
        try:
            body = await self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, request_id)
        except ApiException as exc:
            if exc.status == 404:
                self._cache.pop(request_id, None)
                raise UnknownRequest(request_id) from None
            raise BackendError(f"cannot read evaluation {request_id}: HTTP {exc.status} {exc.reason}") from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[request_id] = (now, body)
        return body

    async def _suspend(self, request_id: str, suspend: bool) -> None:
        try:
            await self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, request_id,
                             {"spec": {"suspend": suspend}})
        except ApiException as exc:
            if exc.status == 404:
                raise UnknownRequest(request_id) from None
            raise BackendError(f"cannot update evaluation {request_id}: HTTP {exc.status} {_reason(exc)}") from None
        self._cache.pop(request_id, None)

    async def stop(self, request_id: str) -> str:
        body = await self._get(request_id, fresh=True)
        phase = (body.get("status") or {}).get("phase")
        if phase in FINISHED_PHASES:
            raise BackendError(f"evaluation {request_id} has already finished ({phase}); nothing to stop")
        if (body.get("spec") or {}).get("suspend"):
            return f"evaluation {request_id} is already stopped"
        await self._suspend(request_id, True)
        return f"evaluation {request_id} stopped; finished samples are kept and resume continues from them"

    async def resume(self, request_id: str) -> str:
        body = await self._get(request_id, fresh=True)
        phase = (body.get("status") or {}).get("phase")
        if not (body.get("spec") or {}).get("suspend"):
            if phase in FINISHED_PHASES:
                raise BackendError(f"evaluation {request_id} has already finished ({phase}); nothing to resume")
            return f"evaluation {request_id} is already running"
        await self._suspend(request_id, False)
        return f"evaluation {request_id} resumed; its datasets continue from their last finished sample"

    async def view(self, request_id: str) -> EvaluationView:
        return self._view(await self._get(request_id))

    async def report_dirs(self, request_id: str) -> list[Path]:
        body = await self._get(request_id)  # UnknownRequest when there is no such Evaluation
        if not self.settings.results_path:
            raise BackendError(f"the results of evaluation {request_id} are on the cluster's results volume, which this server "
                               "does not mount (--results-path); the operator writes report.html there when it finishes")
        meta = body["metadata"]
        root = evaluation_dir(self.settings.results_path, meta.get("namespace") or self.namespace, meta["name"], meta.get("uid", ""))
        spec = EvaluationSpec.model_validate(body.get("spec") or {})
        return [Path(root) / info.eval_model for info in spec.eval_infos if (Path(root) / info.eval_model).is_dir()]

    # -- status → view ----------------------------------------------------------------------------

    def _view(self, body: dict[str, Any], datasets: list[str] | None = None) -> EvaluationView:
        name = body["metadata"]["name"]
        try:
            spec = EvaluationSpec.model_validate(body.get("spec") or {})
            status = EvaluationStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            raise BackendError(f"cannot read evaluation {name}: {format_validation_error(exc)}") from None
        results = {r.eval_model: r for r in status.eval_results}
        if datasets is None:
            datasets = _datasets_of(spec)
        services = []
        for info in spec.eval_infos:
            result = results.get(info.eval_model)
            if result is not None and result.details:
                details = [_dataset(d) for d in result.details]
            else:  # not reconciled yet
                waiting = Status.CANCELLED if spec.suspend else Status.PENDING
                details = [DatasetView(dataset=ds, status=waiting) for ds in datasets]
            services.append(ServiceView(eval_model=info.eval_model, chip=info.chip, baseline_key=info.baseline_key,
                                        datasets=details, release=result is not None and result.release))
        return EvaluationView(request_id=name, domain=spec.domain.value, services=services, suspended=spec.suspend,
                              message=status.message)


def _dataset(detail: DatasetDetail) -> DatasetView:
    return DatasetView(dataset=detail.dataset, status=detail.status, done=detail.done, total=detail.total, accuracy=detail.accuracy,
                       base_accuracy=detail.base_accuracy, diff=detail.diff, message=detail.message, serving=detail.serving,
                       p_value=detail.p_value, disagreement=detail.disagreement)


def _datasets_of(spec: EvaluationSpec) -> list[str]:
    # Not at the top: see shim.routes.start_evaluation.
    from flageval.datasets import DatasetError, suite

    if spec.datasets:
        return list(spec.datasets)
    try:
        return suite(spec.domain.value, spec.mode)
    except DatasetError:
        return []


def _reason(exc: ApiException) -> str:
    """The API server's message (e.g. a CEL rule), not the whole response."""
    try:
        return json.loads(exc.body).get("message", exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
