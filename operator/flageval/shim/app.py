"""FlagEval Auto-Evaluation's six endpoints over a backend, as a FastAPI application.

Clients call `raise_for_status()` and then read `err_code`, so: a well-formed request that cannot be
served answers 200 with err_code 1 and the reason; a malformed one answers 4xx with the same envelope
(400 unreadable JSON, 401 no or wrong token, 413 too large, 422 invalid fields); nothing answers 5xx.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from flageval.api import DatasetResult, Status
from flageval.api.rest import (
    DatasetDiff,
    DiffDetail,
    DiffEntry,
    DiffsRequest,
    Envelope,
    ErrorResponse,
    EvalDiffsResponse,
    EvalResultEntry,
    EvalTask,
    EvaluationDiffsResponse,
    EvaluationRequest,
    EvaluationResponse,
    HealthResponse,
    ProgressEntry,
    ProgressRequest,
    ProgressResponse,
    RequestIdBody,
)
from flageval.api.results import finished_ratio
from flageval.api.urlpolicy import UrlPolicy, check_url
from flageval.backends.base import (
    Backend,
    BackendError,
    DatasetView,
    EvaluationView,
    ServiceView,
)
from flageval.baseline import Candidate, choose_baseline
from flageval.verdict import DEFAULT_TOLERANCE, release_verdict

log = logging.getLogger("flageval.shim")

API_PATHS = ("/evaluation", "/evaldiffs", "/stop_evaluation", "/resume_evaluation", "/evaluation_progress", "/evaluation_diffs")

REQUESTS = Counter("flageval_shim_requests_total", "Requests answered, by endpoint, HTTP status and err_code.", ["endpoint", "code", "err_code"])
LATENCY = Histogram("flageval_shim_request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EVALUATIONS = Counter("flageval_shim_evaluations_started_total", "Evaluations started through POST /evaluation.")


_BEARER = HTTPBearer(auto_error=False, description="The token `flageval serve` was given (--token or FLAGEVAL_SHIM_TOKEN).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


@dataclass
class ShimSettings:
    token: str | None = None  # bearer token; None: no authentication (loopback only)
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)  # which eval_urls evaluations may call
    max_body_bytes: int = 1 << 20
    tolerance: float = DEFAULT_TOLERANCE


class _TooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes")


def _envelope(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(err_msg=message).model_dump(), status_code=status, headers=headers)


class GuardMiddleware:
    """Outermost of ours: refuses bodies over the size limit and turns any unexpected exception into the
    envelope (logged with its traceback), so that clients never see a 500."""

    def __init__(self, app: Any, max_body_bytes: int):
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in API_PATHS else "other"
        started_at = time.perf_counter()
        state = {"started": False, "status": 500}

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
            await send(message)

        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        try:
            too_large = length is not None and int(length) > self.limit
        except ValueError:
            REQUESTS.labels(endpoint, "400", "1").inc()
            await _envelope(400, "bad Content-Length header")(scope, receive, tracked_send)
            return
        if too_large:
            REQUESTS.labels(endpoint, "413", "1").inc()
            await _envelope(413, f"request body exceeds {self.limit} bytes")(scope, receive, tracked_send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as exc:
            if isinstance(exc, _TooLarge):
                response = _envelope(413, exc.detail)
            else:
                log.exception("unexpected error answering %s %s", scope.get("method"), path)
                response = JSONResponse(ErrorResponse(err_msg=f"internal error ({type(exc).__name__}); it has been logged").model_dump())
            REQUESTS.labels(endpoint, str(response.status_code), "1").inc()
            if not state["started"]:
                await response(scope, receive, tracked_send)
        finally:
            if endpoint != "other" or state["status"] >= 400:
                LATENCY.labels(endpoint).observe(time.perf_counter() - started_at)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """One line per problem, 'field.path: reason'; the input values are never echoed (they may hold a key)."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next((str((e.get("ctx") or {}).get("error", "")) for e in errors if e.get("type") == "json_invalid"), "")
        return 400, f"the body is not valid JSON{': ' + detail if detail else ''}"
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query")]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc) or 'body'}: {message}")
    return 422, "; ".join(parts) or "invalid request"


def _missing(location: str, name: str) -> RequestValidationError:
    return RequestValidationError([{"type": "missing", "loc": (location, name), "msg": "Field required", "input": None}])


def _count(endpoint: str, answer: Any) -> Any:
    REQUESTS.labels(endpoint, "200", str(answer.err_code)).inc()
    return answer


def _results(service: ServiceView) -> list[DatasetResult]:
    return [DatasetResult(dataset=d.dataset, status=d.status, accuracy=d.accuracy) for d in service.datasets]


def _shown(view: EvaluationView) -> DatasetView | None:
    """The dataset being evaluated now or, when stopped, the one it stopped in."""
    running = next((d for d in view.datasets if d.status == Status.RUNNING), None)
    if running is None and view.status == Status.CANCELLED:
        running = next((d for d in view.datasets if d.status == Status.CANCELLED and d.done), None)
    return running


def _not_ready(view: EvaluationView) -> str:
    what = "stopped; resume it to finish" if view.status == Status.CANCELLED else f"not finished ({view.status.value})"
    return f"results not ready: evaluation {view.request_id} is {what}; datasets {finished_ratio(d.status for d in view.datasets)}"


def create_app(backend: Backend, settings: ShimSettings | None = None, *, open_backend: bool = True) -> FastAPI:
    """`open_backend=False`: the caller has opened it already; the app still closes it on shutdown (before
    the server re-raises the signal that stopped it)."""
    settings = settings or ShimSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if open_backend and hasattr(backend, "open"):
            await backend.open()
        try:
            yield
        finally:
            await backend.aclose()

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "The body is not valid JSON."), (401, "No or wrong bearer token."),
        (413, "The body exceeds the size limit."), (422, "Missing or invalid fields."))}
    app = FastAPI(
        title="flageval-operator REST API",
        summary="FlagEval Auto-Evaluation's endpoints: start, follow, stop, resume and compare evaluations of model services.",
        version="1",
        lifespan=lifespan,
        responses=errors,
    )
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes)
    async def authorized(credentials: Credentials) -> None:
        if settings.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise StarletteHTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        REQUESTS.labels(request.url.path if request.url.path in API_PATHS else "other", str(status), "1").inc()
        return _envelope(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        REQUESTS.labels(request.url.path if request.url.path in API_PATHS else "other", str(exc.status_code), "1").inc()
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _envelope(exc.status_code, message, headers=getattr(exc, "headers", None))

    guarded = [Depends(authorized)] if settings.token is not None else []

    # -- the six endpoints ------------------------------------------------------------------------

    @app.post("/evaluation", response_model=EvaluationResponse, dependencies=guarded, tags=["FlagEval"],
              summary="Start evaluating model services")
    async def start_evaluation(body: EvaluationRequest) -> EvaluationResponse:
        from flageval.datasets import DATASETS, DatasetError, suite

        try:
            datasets = list(body.datasets) if body.datasets else suite(body.domain.value, body.mode, backend.data_dir)
        except DatasetError as exc:
            return _count("/evaluation", EvaluationResponse(err_code=1, err_msg=str(exc)))
        unknown = [d for d in datasets if d not in DATASETS]
        if unknown:
            return _count("/evaluation", EvaluationResponse(err_code=1, err_msg=f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(DATASETS))}"))
        for info in body.eval_infos:
            refusal = await check_url(info.eval_url, settings.url_policy)
            if refusal:
                return _count("/evaluation", EvaluationResponse(
                    err_code=1, err_msg=f"eval_infos[{info.eval_model}].eval_url {info.eval_url}: {refusal}"))
        try:
            view = await backend.start(body, datasets)
        except BackendError as exc:
            return _count("/evaluation", EvaluationResponse(err_code=1, err_msg=str(exc)))
        EVALUATIONS.inc()
        tasks = [EvalTask(task_id=f"{view.request_id}/{s.eval_model}", eval_model=s.eval_model, chip=s.chip, status=s.status)
                 for s in view.services]
        return _count("/evaluation", EvaluationResponse(request_id=view.request_id, eval_tasks=tasks))

    @app.get("/evaldiffs", response_model=EvalDiffsResponse, dependencies=guarded, tags=["FlagEval"],
             summary="Per-dataset status, accuracy and diff of one evaluation")
    async def evaldiffs(
        body: Annotated[RequestIdBody | None, Body(description="FlagEval's clients send {'request_id': …} as a JSON body.")] = None,
        request_id: Annotated[str | None, Query(min_length=1, max_length=253, description="Alternative to the body.")] = None,
    ) -> EvalDiffsResponse:
        rid = body.request_id if body is not None else request_id
        if rid is None:
            raise _missing("body", "request_id")
        try:
            view = await backend.view(rid)
        except BackendError as exc:
            return _count("/evaldiffs", EvalDiffsResponse(err_code=1, err_msg=str(exc)))
        results = {
            s.eval_model: [EvalResultEntry(
                status=s.status, release=s.release,
                details=[DatasetDiff(dataset=d.dataset, status=d.status, accuracy=d.accuracy, diff=d.diff) for d in s.datasets],
            )]
            for s in view.services
        }
        if not view.finished:
            return _count("/evaldiffs", EvalDiffsResponse(err_code=1, err_msg=_not_ready(view), eval_results=results))
        return _count("/evaldiffs", EvalDiffsResponse(eval_results=results))

    @app.post("/stop_evaluation", response_model=Envelope, dependencies=guarded, tags=["FlagEval"],
              summary="Stop an evaluation; finished samples are kept")
    async def stop_evaluation(body: RequestIdBody):
        try:
            return _count("/stop_evaluation", Envelope(err_msg=await backend.stop(body.request_id)))
        except BackendError as exc:
            return _count("/stop_evaluation", Envelope(err_code=1, err_msg=str(exc)))

    @app.post("/resume_evaluation", response_model=Envelope, dependencies=guarded, tags=["FlagEval"],
              summary="Resume a stopped evaluation from its last finished samples")
    async def resume_evaluation(body: RequestIdBody):
        try:
            return _count("/resume_evaluation", Envelope(err_msg=await backend.resume(body.request_id)))
        except BackendError as exc:
            return _count("/resume_evaluation", Envelope(err_code=1, err_msg=str(exc)))

    @app.post("/evaluation_progress", response_model=ProgressResponse, dependencies=guarded, tags=["FlagEval"],
              summary="Progress of one evaluation")
    async def evaluation_progress(body: ProgressRequest) -> ProgressResponse:
        try:
            view = await backend.view(body.request_id)
        except BackendError as exc:
            return _count("/evaluation_progress", ProgressResponse(err_code=1, err_msg=str(exc)))
        if body.domain is not None and body.domain.value != view.domain:
            return _count("/evaluation_progress", ProgressResponse(
                err_code=1, err_msg=f"evaluation {view.request_id} is in domain {view.domain}, not {body.domain.value}"))
        shown = _shown(view)
        per_service = []
        for s in view.services:
            current = s.running or next((d for d in s.datasets if d.status == Status.CANCELLED and d.done), None)
            per_service.append(ProgressEntry(eval_model=s.eval_model, status=s.status, datasets_progress=s.datasets_progress,
                                             running_dataset=current.dataset if current else "",
                                             running_progress=current.progress if current else ""))
        datasets = view.datasets
        return _count("/evaluation_progress", ProgressResponse(
            finished=view.finished,
            status=view.status,
            datasets_progress=finished_ratio(d.status for d in datasets),
            running_dataset=shown.dataset if shown else "",
            running_progress=shown.progress if shown else "",
            eval_tasks=per_service,
        ))

    async def diffs(request_ids: list[str]) -> EvaluationDiffsResponse:
        ids = list(dict.fromkeys(request_ids))
        views, problems = [], []
        for rid in ids:
            try:
                views.append(await backend.view(rid))
            except BackendError as exc:
                problems.append(str(exc))
        # Every service of the evaluations compared is a candidate, in the order the request_ids were given.
        compared = [(Candidate(v.request_id, s.eval_model, s.baseline_key), s) for v in views for s in v.services]
        candidates = [c for c, _ in compared]
        services = {(c.evaluation, c.eval_model): s for c, s in compared}
        entries = []
        for candidate, service in compared:
            base = choose_baseline(candidate, candidates, compare_all=True)
            reference = None if base is candidate else _results(services[(base.evaluation, base.eval_model)])
            comparisons, release = release_verdict(_results(service), reference, tolerance=settings.tolerance)
            entries.append(DiffEntry(
                request_id=candidate.evaluation, eval_model=service.eval_model, baseline=f"{base.evaluation}/{base.eval_model}",
                release=release,
                details=[DiffDetail(dataset=c.dataset, base_acc=c.base_accuracy, accuracy=c.accuracy, diff=c.diff) for c in comparisons],
            ))
        problems += [_not_ready(v) for v in views if not v.finished]
        if problems:
            return _count("/evaluation_diffs", EvaluationDiffsResponse(err_code=1, err_msg="; ".join(problems), eval_diffs=entries))
        return _count("/evaluation_diffs", EvaluationDiffsResponse(eval_diffs=entries))

    @app.post("/evaluation_diffs", response_model=EvaluationDiffsResponse, dependencies=guarded, tags=["FlagEval"],
              summary="Compare evaluations with a baseline")
    async def evaluation_diffs(body: DiffsRequest) -> EvaluationDiffsResponse:
        return await diffs(body.request_ids)

    @app.get("/evaluation_diffs", response_model=EvaluationDiffsResponse, dependencies=guarded, tags=["FlagEval"],
             summary="Compare evaluations with a baseline (GET)")
    async def evaluation_diffs_get(
        body: Annotated[DiffsRequest | None, Body()] = None,
        request_ids: Annotated[list[str] | None, Query(description="Repeated, or comma-separated; alternative to the body.")] = None,
    ) -> EvaluationDiffsResponse:
        if body is not None:
            return await diffs(body.request_ids)
        ids = [part.strip() for value in request_ids or [] for part in value.split(",") if part.strip()]
        if not ids:
            raise _missing("body", "request_ids")
        return await diffs(ids)

    # -- operations -------------------------------------------------------------------------------

    @app.get("/healthz", response_model=HealthResponse, tags=["operations"], summary="Liveness")
    async def healthz() -> HealthResponse:
        return HealthResponse(status="ok", backend=backend.name)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
