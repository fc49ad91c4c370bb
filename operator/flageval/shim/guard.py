"""The outermost layer of the REST application: size limit, the envelope for any failure, and the
request metrics — HTTP status, err_code and latency counted once per request, here."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from flageval.api.rest import ErrorResponse

log = logging.getLogger("flageval.shim")

API_PATHS = ("/evaluation", "/evaldiffs", "/stop_evaluation", "/resume_evaluation", "/evaluation_progress", "/evaluation_diffs")

REQUESTS = Counter("flageval_shim_requests_total", "Requests answered, by endpoint, HTTP status and err_code.", ["endpoint", "code", "err_code"])
LATENCY = Histogram("flageval_shim_request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

_ERR_CODE = "err_code"  # key in the request's state (scope["state"]) where an envelope leaves its err_code


class EnvelopeResponse(JSONResponse):
    """A JSON answer that tells the middleware its err_code as it is sent."""

    err_code: int | None = None

    def render(self, content: Any) -> bytes:
        if isinstance(content, dict):
            self.err_code = content.get("err_code")
        return super().render(content)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.err_code is not None:
            scope.setdefault("state", {})[_ERR_CODE] = self.err_code
        await super().__call__(scope, receive, send)


def envelope(status: int, message: str, headers: dict[str, str] | None = None) -> EnvelopeResponse:
    """A refusal: err_code 1 and the reason, with an HTTP status."""
    return EnvelopeResponse(ErrorResponse(err_msg=message).model_dump(), status_code=status, headers=headers)


class _TooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds {limit} bytes")


class GuardMiddleware:
    """Refuses bodies over the size limit, turns any unexpected exception into the envelope (logged with
    its traceback) so that clients never see a 500, and counts every answer."""

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
        state = scope.setdefault("state", {})
        sent = {"started": False, "status": 500}

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["started"] = True
                sent["status"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, tracked_send, sent)
        finally:
            status = sent["status"]
            if endpoint != "other" or status >= 400:
                REQUESTS.labels(endpoint, str(status), str(state.get(_ERR_CODE, 1))).inc()
                LATENCY.labels(endpoint).observe(time.perf_counter() - started_at)

    async def _guarded(self, scope: dict, receive: Any, send: Any, sent: dict) -> None:
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        try:
            too_large = length is not None and int(length) > self.limit
        except ValueError:
            await envelope(400, "bad Content-Length header")(scope, receive, send)
            return
        if too_large:
            await envelope(413, f"request body exceeds {self.limit} bytes")(scope, receive, send)
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
            await self.app(scope, limited_receive, send)
        except Exception as exc:
            if isinstance(exc, _TooLarge):
                response = envelope(413, exc.detail)
            else:
                log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path", ""))
                response = EnvelopeResponse(ErrorResponse(err_msg=f"internal error ({type(exc).__name__}); it has been logged").model_dump())
            if not sent["started"]:
                await response(scope, receive, send)
