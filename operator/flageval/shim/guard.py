"""The outermost layer of the REST application: per-client rate limit, size limit and body deadline,
the envelope for any failure, and the request metrics — HTTP status, err_code and latency counted once
per request, here."""

from __future__ import annotations

import asyncio
import logging
import math
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


class _SlowBody(StarletteHTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


class RateLimiter:
    """A token bucket per client address: `rate` requests a second on average, bursts of `burst`."""

    MAX_CLIENTS = 10_000  # past this many, clients whose bucket has refilled are forgotten

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, max(1, burst)
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when counted)

    def wait_needed(self, client: str, now: float) -> float:
        """0 when the request may go ahead (and it is counted); else the seconds until it could."""
        tokens, then = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > self.MAX_CLIENTS:
            self.buckets = {k: (t, w) for k, (t, w) in self.buckets.items() if t + (now - w) * self.rate < self.burst}
        return 0.0


class GuardMiddleware:
    """Refuses clients over the rate limit (429), bodies over the size limit (413) and bodies that do not
    arrive in time (408); turns any unexpected exception into the envelope (logged with its traceback) so
    that clients never see a 500; counts every answer."""

    def __init__(self, app: Any, max_body_bytes: int, rate_limit: float = 0, rate_burst: int = 0, body_timeout: float = 0):
        self.app = app
        self.limit = max_body_bytes
        self.limiter = RateLimiter(rate_limit, rate_burst or math.ceil(rate_limit)) if rate_limit > 0 else None
        self.body_timeout = body_timeout or None

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
        if self.limiter is not None:
            client = (scope.get("client") or ("?", 0))[0]
            wait = self.limiter.wait_needed(client, time.monotonic())
            if wait:
                retry = max(1, math.ceil(wait))
                await envelope(429, f"too many requests from {client}: at most {self.limiter.rate:g} a second "
                                    f"(bursts of {self.limiter.burst}); retry in {retry} s",
                               headers={"Retry-After": str(retry)})(scope, receive, send)
                return
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
        complete = False

        async def limited_receive() -> dict:
            nonlocal received, complete
            if complete or self.body_timeout is None:
                message = await receive()
            else:
                try:  # a client that trickles its body holds a connection and a task: not for long
                    message = await asyncio.wait_for(receive(), self.body_timeout)
                except TimeoutError:
                    raise _SlowBody(self.body_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except Exception as exc:
            if isinstance(exc, (_TooLarge, _SlowBody)):
                response = envelope(exc.status_code, exc.detail, headers={"Connection": "close"} if isinstance(exc, _SlowBody) else None)
            else:
                log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path", ""))
                response = EnvelopeResponse(ErrorResponse(err_msg=f"internal error ({type(exc).__name__}); it has been logged").model_dump())
            if not sent["started"]:
                await response(scope, receive, send)
