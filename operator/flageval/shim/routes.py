"""The endpoints: FlagEval's six (flageval_router) and the operational ones (operations_router).

The backend and the settings come by dependency injection from the application's state (create_app
puts them there); HTTP status, err_code and latency are counted once, in guard.GuardMiddleware.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from flageval.api import Status
from flageval.api.rest import (
    DiffsRequest,
    Envelope,
    EvalDiffsResponse,
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
from flageval.api.urlpolicy import check_url
from flageval.backends.base import (
    Backend,
    BackendError,
    DatasetView,
    EvaluationView,
)
from flageval.shim import diffs
from flageval.shim.guard import EnvelopeResponse
from flageval.shim.settings import ShimSettings

EVALUATIONS = Counter("flageval_shim_evaluations_started_total", "Evaluations started through POST /evaluation.")


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> ShimSettings:
    return request.app.state.settings


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[ShimSettings, Depends(get_settings)]

flageval_router = APIRouter(tags=["FlagEval"], default_response_class=EnvelopeResponse)
operations_router = APIRouter(tags=["operations"])
# Reports hold prompts and answers: behind the same token as FlagEval's endpoints.
reports_router = APIRouter(tags=["reports"])


def _missing(location: str, name: str) -> RequestValidationError:
    return RequestValidationError([{"type": "missing", "loc": (location, name), "msg": "Field required", "input": None}])


def _stopped_in(datasets: list[DatasetView]) -> DatasetView | None:
    return next((d for d in datasets if d.status == Status.CANCELLED and d.done), None)


def _shown(view: EvaluationView) -> DatasetView | None:
    """The dataset being evaluated now or, when stopped, the one it stopped in."""
    running = next((d for d in view.datasets if d.status == Status.RUNNING), None)
    if running is None and view.status == Status.CANCELLED:
        running = _stopped_in(view.datasets)
    return running


@flageval_router.post("/evaluation", response_model=EvaluationResponse, summary="Start evaluating model services")
async def start_evaluation(body: EvaluationRequest, backend: BackendDep, settings: SettingsDep) -> EvaluationResponse:
    # Here, not at the top: the datasets bring the engine and its HTTP stack, which the server does not
    # otherwise need; it starts faster without them.
    from flageval.datasets import DATASETS, DatasetError, is_dataset, suite

    try:
        datasets = list(body.datasets) if body.datasets else suite(body.domain.value, body.mode, backend.data_dir)
    except DatasetError as exc:
        return EvaluationResponse(err_code=1, err_msg=str(exc))
    unknown = [d for d in datasets if not is_dataset(d)]
    if unknown:
        return EvaluationResponse(err_code=1, err_msg=f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(DATASETS))} and lm-evaluation-harness tasks")
    for info in body.eval_infos:
        refusal = await check_url(info.eval_url, settings.url_policy)
        if refusal:
            return EvaluationResponse(err_code=1, err_msg=f"eval_infos[{info.eval_model}].eval_url {info.eval_url}: {refusal}")
    try:
        view = await backend.start(body, datasets)
    except BackendError as exc:
        return EvaluationResponse(err_code=1, err_msg=str(exc))
    EVALUATIONS.inc()
    tasks = [EvalTask(task_id=f"{view.request_id}/{s.eval_model}", eval_model=s.eval_model, chip=s.chip, status=s.status)
             for s in view.services]
    return EvaluationResponse(request_id=view.request_id, eval_tasks=tasks)


@flageval_router.get("/evaldiffs", response_model=EvalDiffsResponse, summary="Per-dataset status, accuracy and diff of one evaluation")
async def evaldiffs(
    backend: BackendDep,
    body: Annotated[RequestIdBody | None, Body(description="FlagEval's clients send {'request_id': …} as a JSON body.")] = None,
    request_id: Annotated[str | None, Query(min_length=1, max_length=253, description="Alternative to the body.")] = None,
) -> EvalDiffsResponse:
    rid = body.request_id if body is not None else request_id
    if rid is None:
        raise _missing("body", "request_id")
    try:
        view = await backend.view(rid)
    except BackendError as exc:
        return EvalDiffsResponse(err_code=1, err_msg=str(exc))
    results = diffs.eval_results(view)
    if not view.finished:
        return EvalDiffsResponse(err_code=1, err_msg=diffs.not_ready(view), eval_results=results)
    return EvalDiffsResponse(eval_results=results)


@flageval_router.post("/stop_evaluation", response_model=Envelope, summary="Stop an evaluation; finished samples are kept")
async def stop_evaluation(body: RequestIdBody, backend: BackendDep):
    try:
        return Envelope(err_msg=await backend.stop(body.request_id))
    except BackendError as exc:
        return Envelope(err_code=1, err_msg=str(exc))


@flageval_router.post("/resume_evaluation", response_model=Envelope, summary="Resume a stopped evaluation from its last finished samples")
async def resume_evaluation(body: RequestIdBody, backend: BackendDep):
    try:
        return Envelope(err_msg=await backend.resume(body.request_id))
    except BackendError as exc:
        return Envelope(err_code=1, err_msg=str(exc))


@flageval_router.post("/evaluation_progress", response_model=ProgressResponse, summary="Progress of one evaluation")
async def evaluation_progress(body: ProgressRequest, backend: BackendDep) -> ProgressResponse:
    try:
        view = await backend.view(body.request_id)
    except BackendError as exc:
        return ProgressResponse(err_code=1, err_msg=str(exc))
    if body.domain is not None and body.domain.value != view.domain:
        return ProgressResponse(err_code=1, err_msg=f"evaluation {view.request_id} is in domain {view.domain}, not {body.domain.value}")
    shown = _shown(view)
    per_service = []
    for s in view.services:
        current = s.running or _stopped_in(s.datasets)
        per_service.append(ProgressEntry(eval_model=s.eval_model, status=s.status, datasets_progress=s.datasets_progress,
                                         running_dataset=current.dataset if current else "",
                                         running_progress=current.progress if current else ""))
    return ProgressResponse(
        finished=view.finished,
        status=view.status,
        datasets_progress=finished_ratio(d.status for d in view.datasets),
        running_dataset=shown.dataset if shown else "",
        running_progress=shown.progress if shown else "",
        eval_tasks=per_service,
    )


async def _compare(request_ids: list[str], backend: Backend, settings: ShimSettings) -> EvaluationDiffsResponse:
    views, problems = [], []
    for rid in dict.fromkeys(request_ids):
        try:
            views.append(await backend.view(rid))
        except BackendError as exc:
            problems.append(str(exc))
    entries = diffs.compare(views, settings.tolerance)
    problems += [diffs.not_ready(v) for v in views if not v.finished]
    if problems:
        return EvaluationDiffsResponse(err_code=1, err_msg="; ".join(problems), eval_diffs=entries)
    return EvaluationDiffsResponse(eval_diffs=entries)


@flageval_router.post("/evaluation_diffs", response_model=EvaluationDiffsResponse, summary="Compare evaluations with a baseline")
async def evaluation_diffs(body: DiffsRequest, backend: BackendDep, settings: SettingsDep) -> EvaluationDiffsResponse:
    return await _compare(body.request_ids, backend, settings)


@flageval_router.get("/evaluation_diffs", response_model=EvaluationDiffsResponse, summary="Compare evaluations with a baseline (GET)")
async def evaluation_diffs_get(
    backend: BackendDep,
    settings: SettingsDep,
    body: Annotated[DiffsRequest | None, Body()] = None,
    request_ids: Annotated[list[str] | None, Query(description="Repeated, or comma-separated; alternative to the body.")] = None,
) -> EvaluationDiffsResponse:
    if body is not None:
        return await _compare(body.request_ids, backend, settings)
    ids = [part.strip() for value in request_ids or [] for part in value.split(",") if part.strip()]
    if not ids:
        raise _missing("body", "request_ids")
    return await _compare(ids, backend, settings)


@operations_router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz(backend: BackendDep) -> HealthResponse:
    return HealthResponse(status="ok", backend=backend.name)


@reports_router.get("/report/{request_id}", summary="The evaluation's HTML report (flageval report)", response_class=HTMLResponse,
                       responses={404: {"description": "Unknown request_id, or no dataset finished yet"}})
async def report(request_id: str, backend: BackendDep, settings: SettingsDep) -> HTMLResponse:
    import asyncio
    import html

    from flageval.backends.base import UnknownRequest

    try:
        dirs = await backend.report_dirs(request_id)
    except UnknownRequest as exc:
        return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", status_code=404)
    except BackendError as exc:
        return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", status_code=409)

    def build() -> str:
        from flageval.report.html import build_report, load_runs

        try:
            runs, _ = load_runs(dirs)
        except ValueError:
            raise LookupError(f"evaluation {request_id} has no finished dataset yet") from None
        return build_report(runs, tolerance=settings.tolerance, title=f"flageval report: {request_id}")

    try:  # reading samples and drawing charts takes a while: off the event loop
        page = await asyncio.to_thread(build)
    except LookupError as exc:
        return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", status_code=404)
    return HTMLResponse(page)


@operations_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
