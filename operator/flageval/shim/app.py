"""FlagEval Auto-Evaluation's six endpoints over a backend, as a FastAPI application.

Clients call `raise_for_status()` and then read `err_code`, so: a well-formed request that cannot be
served answers 200 with err_code 1 and the reason; a malformed one answers 4xx with the same envelope
(400 unreadable JSON, 401 no or wrong token, 408 body too slow, 413 too large, 422 invalid fields, 429 too
many requests from one client address); nothing answers 5xx.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from flageval.api.rest import ErrorResponse
from flageval.backends.base import Backend
from flageval.shim.guard import GuardMiddleware, envelope
from flageval.shim.routes import (
    flageval_router,
    get_settings,
    operations_router,
    reports_router,
)
from flageval.shim.settings import ShimSettings

__all__ = ["ShimSettings", "create_app"]

_BEARER = HTTPBearer(auto_error=False, description="The token `flageval serve` was given (--token or FLAGEVAL_SHIM_TOKEN).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


async def authorized(credentials: Credentials, settings: Annotated[ShimSettings, Depends(get_settings)]) -> None:
    if settings.token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        raise StarletteHTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


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


async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    status, message = _validation_message(exc)
    return envelope(status, message)


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no endpoint {request.url.path}; see /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return envelope(exc.status_code, message, headers=getattr(exc, "headers", None))


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
        (400, "The body is not valid JSON."), (401, "No or wrong bearer token."), (408, "The body did not arrive in time."),
        (413, "The body exceeds the size limit."), (422, "Missing or invalid fields."),
        (429, "Too many requests from this client address; Retry-After says when to try again."))}
    app = FastAPI(
        title="flageval-operator REST API",
        summary="FlagEval Auto-Evaluation's endpoints: start, follow, stop, resume and compare evaluations of model services.",
        version="1",
        lifespan=lifespan,
        responses=errors,
    )
    app.state.backend, app.state.settings = backend, settings
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, rate_limit=settings.rate_limit,
                       rate_burst=settings.rate_burst, body_timeout=settings.body_timeout)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    # Without a token the schema names no security scheme: the dependency is added only with one.
    app.include_router(flageval_router, dependencies=[Depends(authorized)] if settings.token is not None else [])
    app.include_router(reports_router, dependencies=[Depends(authorized)] if settings.token is not None else [])
    app.include_router(operations_router)
    return app
