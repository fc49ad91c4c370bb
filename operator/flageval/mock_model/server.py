"""An OpenAI-compatible HTTP server in front of an Answerer, with latency and fault injection.

Plain asyncio HTTP/1.1 with keep-alive, requests parsed by httptools: no framework in the request
path, so that the server is never what a benchmark of a client measures. Endpoints: POST
/v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /stats (requests per sample
key, faults served), POST /stats/reset.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson

from flageval.mock_model.answerer import Answerer

FAULT_KINDS = ("503", "429", "500", "reset", "bad_json", "stall")
# A bare --fault-rate number is spread over these; a stall holds a client for its whole timeout, so it
# is only injected when asked for by name.
DEFAULT_FAULT_KINDS = ("503", "429", "500", "reset", "bad_json")

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class EchoAnswerer:
    """Answers with the question itself: chat content = last user message; completions append ' re:<key>'.

    The sample key is the message or prompt (hashed when longer than 64 characters)."""

    @staticmethod
    def key_of(text: str) -> str:
        return text if len(text) <= 64 else "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
                text = str(content or "")
                break
        return self.key_of(text), text

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = self.key_of(prompt)
        generated = "" if body.get("max_tokens") == 0 else f" re:{key}"
        choice: dict[str, Any] = {"text": generated, "finish_reason": "length", "logprobs": None}
        if body.get("echo"):
            choice["text"] = prompt + generated
        if body.get("logprobs") is not None:
            text = choice["text"]
            tokens = re.findall(r"\s*\S+|\s+$", text) or [text]
            offsets, position = [], 0
            for token in tokens:
                offsets.append(position)
                position += len(token)
            first = 0 if body.get("echo") else 1
            choice["logprobs"] = {
                "tokens": tokens,
                "token_logprobs": [None if (i == 0 and first == 0) else -1.0 for i in range(len(tokens))],
                "top_logprobs": [None if (i == 0 and first == 0) else {t: -1.0} for i, t in enumerate(tokens)],
                "text_offset": offsets,
            }
        return key, choice


class FixedAnswerer:
    """The same answer to every question (load tests: no answer logic, no data)."""

    def __init__(self, text: str = "The answer is 42.\n#### 42") -> None:
        self.text = text

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        return EchoAnswerer().chat(messages, body)[0], self.text

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return EchoAnswerer.key_of(prompt), {"text": self.text, "finish_reason": "stop", "logprobs": None}


@dataclass
class FaultPlan:
    """Which fault (if any) a request gets: a pure function of (seed, sample key, how many times that
    key was asked before), so a run's faults do not depend on the order requests arrive in."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: float = 1.0
    stall_seconds: float = 3600.0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if any(r < 0 for r in self.rates.values()) or sum(self.rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates must be ≥ 0 and add up to at most 1")

    def pick(self, key: str, nth: int) -> str | None:
        if not self.rates:
            return None
        digest = hashlib.sha256(f"{self.seed}:{key}:{nth}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.rates.get(kind, 0.0)
            if u < edge:
                return kind
        return None


def parse_fault_rates(spec: str | None, kinds: Sequence[str] | None = None) -> dict[str, float]:
    """'0.3' → 0.3 spread evenly over `kinds`; '503=0.1,reset=0.05' → those rates."""
    if not spec:
        return {}
    spec = spec.strip()
    try:
        total = float(spec)
    except ValueError:
        rates: dict[str, float] = {}
        for pair in spec.split(","):
            kind, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"fault rate '{pair}' is not kind=rate") from None
            rates[kind.strip()] = float(value)
        return rates
    chosen = tuple(kinds or DEFAULT_FAULT_KINDS)
    return {kind: total / len(chosen) for kind in chosen}


@dataclass
class ServerOptions:
    latency: float = 0.0  # seconds before every answer
    latency_jitter: float = 0.0  # plus uniform [0, jitter)
    faults: FaultPlan = field(default_factory=FaultPlan)
    served_model: str | None = None  # None: any model name is accepted
    api_key: str | None = None  # None: no authorization required
    reasoning_field: bool = False  # thinking in reasoning_content instead of <think> in content
    seed: int = 0
    echo_auth: bool = False  # error bodies quote the request's Authorization header, as some servers do
    usage: bool = True  # answers carry usage (completion tokens: the content's words and punctuation)
    truncate_rate: float = 0.0  # share of questions whose chat answer is cut in half, finish_reason 'length'
    rephrase_rate: float = 0.0  # share of questions whose chat answer starts with another sentence (same verdict)


def chosen(seed: int, what: str, key: str, rate: float) -> bool:
    """Deterministic per (seed, what, question): the same question is always truncated (or not)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{what}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


_WORDS = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The mock's token count: words and punctuation marks."""
    return len(_WORDS.findall(text))


REPHRASED_OPENING = "Here is my reasoning. "


class _Action:
    __slots__ = ("close", "data", "delay", "kind")

    def __init__(self, data: bytes, *, close: bool = False, kind: str = "respond", delay: float = 0.0) -> None:
        self.data = data
        self.close = close
        self.kind = kind  # respond | reset | stall
        self.delay = delay


def _response(status: int, payload: Any, *, headers: Sequence[tuple[str, str]] = (), close: bool = False,
              raw: bytes | None = None) -> bytes:
    if raw is not None:
        body = raw
    else:
        try:
            body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # a type orjson does not know: the standard library decides
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "content-type: application/json",
            f"content-length: {len(body)}"]
    head.extend(f"{name}: {value}" for name, value in headers)
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _error(status: int, message: str, kind: str = "invalid_request_error", **kw: Any) -> bytes:
    return _response(status, {"error": {"message": message, "type": kind, "code": status}}, **kw)


class MockModelServer:
    """Holds the answerer, options and request counts; `start()` binds a listening socket."""

    def __init__(self, answerer: Answerer | None = None, options: ServerOptions | None = None) -> None:
        self.answerer: Answerer = answerer or EchoAnswerer()
        self.options = options or ServerOptions()
        self.rng = random.Random(self.options.seed)
        self.by_key: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.total = 0  # generation requests received, rejected ones included
        self.answered = 0  # generation requests answered 200 with a reply
        self.truncated: Counter[str] = Counter()  # answers cut for length, per question
        self.rephrased: Counter[str] = Counter()  # answers with the other opening, per question
        self.delays: deque[float] = deque(maxlen=1_000_000)  # latency injected into each answer, seconds
        self.first_request_time: float | None = None  # wall clock, for start-up measurements
        self.last_request_time: float | None = None
        self._server: asyncio.base_events.Server | None = None
        self._created = int(time.time())

    # -- stats -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"total": self.total, "by_key": dict(self.by_key), "faults": dict(self.faults),
                "by_path": dict(self.by_path), "first_request_time": self.first_request_time,
                "last_request_time": self.last_request_time, "answered": self.answered,
                "truncated": sum(self.truncated.values()), "rephrased": sum(self.rephrased.values())}

    def reset_stats(self) -> None:
        self.by_key.clear()
        self.faults.clear()
        self.by_path.clear()
        self.truncated.clear()
        self.rephrased.clear()
        self.delays.clear()
        self.total = self.answered = 0
        self.first_request_time = self.last_request_time = None

    # -- serving -----------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096,
                                                reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    # -- request handling --------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> _Action:
        close = not keep_alive
        path = path.split("?", 1)[0]
        if path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        self.by_path[path] += 1
        if path in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"):
            if method != "POST":
                return _Action(_error(405, f"{method} is not allowed on {path}", close=close), close=close)
            return self._generate(path, headers, body, close)
        if path in ("/v1/models", "/models") and method == "GET":
            models = [self.options.served_model or "mock-model"]
            data = {"object": "list", "data": [{"id": m, "object": "model", "created": self._created,
                                                "owned_by": "flageval"} for m in models]}
            return _Action(_response(200, data, close=close), close=close)
        if path == "/health" and method == "GET":
            return _Action(_response(200, {"status": "ok"}, close=close), close=close)
        if path == "/stats" and method == "GET":
            return _Action(_response(200, self.stats(), close=close), close=close)
        if path == "/stats/reset" and method == "POST":
            self.reset_stats()
            return _Action(_response(200, {"status": "reset"}, close=close), close=close)
        return _Action(_error(404, f"no route {method} {path}", "not_found", close=close), close=close)

    def _generate(self, path: str, headers: dict[str, str], raw: bytes, close: bool) -> _Action:
        options = self.options
        self.total += 1
        self.last_request_time = time.time()
        if self.first_request_time is None:
            self.first_request_time = self.last_request_time
        said = f" (request had Authorization: {headers.get('authorization', '')})" if options.echo_auth else ""
        if options.api_key is not None and headers.get("authorization") != f"Bearer {options.api_key}":
            return _Action(_error(401, "invalid API key" + said, "authentication_error", close=close), close=close)
        try:
            body = orjson.loads(raw)
        except ValueError:
            return _Action(_error(400, "request body is not valid JSON", close=close), close=close)
        if not isinstance(body, dict):
            return _Action(_error(400, "request body must be a JSON object", close=close), close=close)
        model = body.get("model")
        if options.served_model is not None and model != options.served_model:
            return _Action(_error(404, f"The model `{model}` does not exist.", "NotFoundError", close=close),
                           close=close)
        chat = "chat" in path
        try:
            keys, payload = self._chat(body, model) if chat else self._completions(body, model)
        except _BadRequest as error:
            return _Action(_error(400, str(error), close=close), close=close)

        nth = self.by_key[keys[0]]
        for key in keys:
            self.by_key[key] += 1
        delay = options.latency + (self.rng.uniform(0, options.latency_jitter) if options.latency_jitter else 0.0)
        fault = options.faults.pick(keys[0], nth)
        if fault is None:
            self.answered += 1
            self.delays.append(delay)
            if chat:
                self._shape_chat(keys[0], payload)
            elif not options.usage:
                payload.pop("usage", None)
            return _Action(_response(200, payload, close=close), close=close, delay=delay)
        self.faults[fault] += 1
        retry_after = f"{options.faults.retry_after:g}"
        if fault == "503":
            data = _error(503, "server overloaded, retry later" + said, "ServiceUnavailable",
                          headers=[("retry-after", retry_after)], close=close)
        elif fault == "429":
            data = _error(429, "rate limit reached" + said, "RateLimitError", headers=[("retry-after", retry_after)],
                          close=close)
        elif fault == "500":
            data = _error(500, "internal error" + said, "InternalServerError", close=close)
        elif fault == "bad_json":
            data = _response(200, None, raw=b'{"id":"cmpl-broken","choices":[{"index":0,"mess', close=close)
        elif fault == "reset":
            # Headers promise a body that never comes; the socket is then reset.
            return _Action(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{\"id\"",
                           kind="reset", delay=delay)
        else:
            return _Action(b"", kind="stall", delay=options.faults.stall_seconds)
        return _Action(data, close=close, delay=delay)

    def _shape_chat(self, key: str, payload: dict[str, Any]) -> None:
        """What a real server adds to an answer: a rephrased opening, a cut at the length limit, usage."""
        options = self.options
        choice = payload["choices"][0]
        message = choice["message"]
        content = message["content"]
        if chosen(options.seed, "rephrase", key, options.rephrase_rate):
            self.rephrased[key] += 1
            content = REPHRASED_OPENING + content
        if chosen(options.seed, "truncate", key, options.truncate_rate):
            self.truncated[key] += 1
            content = content[: len(content) // 2]
            choice["finish_reason"] = "length"
        message["content"] = content
        if options.usage:
            tokens = count_tokens(content) + count_tokens(message.get("reasoning_content") or "")
            payload["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
        else:
            payload.pop("usage", None)

    def _chat(self, body: dict[str, Any], model: Any) -> tuple[list[str], dict[str, Any]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _BadRequest("'messages' must be a non-empty list of message objects")
        key, content = self.answerer.chat(messages, body)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        template_kwargs = body.get("chat_template_kwargs")
        if isinstance(template_kwargs, dict) and template_kwargs.get("enable_thinking"):
            thought = "Let me work through this step by step."
            if self.options.reasoning_field:
                message["reasoning_content"] = thought
            else:
                message["content"] = f"<think>\n{thought}\n</think>\n\n{content}"
        return [key], {
            "id": f"chatcmpl-{self.total}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _completions(self, body: dict[str, Any], model: Any) -> tuple[list[str], dict[str, Any]]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _BadRequest("'prompt' must be a string or a non-empty list of strings")
        keys, choices = [], []
        for index, text in enumerate(prompts):
            key, choice = self.answerer.completion(text, body)
            keys.append(key)
            choices.append({**choice, "index": index})
        generated = 0 if body.get("echo") else sum(count_tokens(c.get("text") or "") for c in choices)
        return keys, {
            "id": f"cmpl-{self.total}", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": {"prompt_tokens": 0, "completion_tokens": generated, "total_tokens": generated},
        }


class _BadRequest(ValueError):
    pass


class _Refusal(Exception):
    """Raised from a parser callback: answer with `data` and close the connection."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses the requests; they are answered one at a time, in order
    (pipelining-safe)."""

    def __init__(self, server: MockModelServer) -> None:
        self.server = server
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[str, str, dict[str, str], bytes, bool] | bytes] = deque()  # requests, or a refusal
        self.waiting = False
        self.timer: asyncio.TimerHandle | None = None
        # the request being parsed
        self.in_head = True
        self.head_started_here = False
        self.head_bytes = 0
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # a refusal or a protocol upgrade ends the connection: ignore the rest
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.parser = None  # answered as plain HTTP (RFC 9110 lets a server ignore Upgrade), then closed
        except httptools.HttpParserError as error:
            refusal = error.__context__ if isinstance(error.__context__, _Refusal) else None
            self._refuse(refusal.data if refusal else _error(400, f"malformed request: {error}", close=True))
        else:
            # httptools keeps an unfinished header in memory however long it grows: bound the head here
            # (counting whole reads; the one a head starts in is not counted).
            if self.in_head and not self.head_started_here:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD:
                    self._refuse(_error(413, "request head too large", close=True))
            self.head_started_here = False
        if not self.waiting:
            self._process()

    def _refuse(self, data: bytes) -> None:
        self.queue.append(data)
        self.parser = None

    # -- httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = self.head_started_here = True
        self.head_bytes = self.body_bytes = 0
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.in_head = False
        if int(self.headers.get("content-length", "0")) > MAX_BODY:  # digits only: llhttp checked them
            raise _Refusal(_error(413, "request body too large", close=True))

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:  # a chunked body has no length up front
            raise _Refusal(_error(413, "request body too large", close=True))
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        # The next head starts in this read at the earliest: not counted, as the rest of this read is body.
        self.in_head = self.head_started_here = True
        upgrade = parser.should_upgrade()
        if upgrade and ("content-length" in self.headers or "transfer-encoding" in self.headers):
            # llhttp hands the body of an upgrade request over unparsed: refuse rather than answer without it.
            raise _Refusal(_error(400, "a request asking for a protocol upgrade cannot carry a body here", close=True))
        self.queue.append((parser.get_method().decode("latin-1"), self.url.decode("latin-1"), self.headers,
                           b"".join(self.body), parser.should_keep_alive() and not upgrade))

    def _process(self) -> None:
        while self.transport is not None and not self.waiting and self.queue:
            request = self.queue.popleft()
            if isinstance(request, bytes):
                self._reply_and_close(request)
                return
            action = self.server.handle(*request)
            if action.delay > 0:
                self.waiting = True
                self.timer = asyncio.get_running_loop().call_later(action.delay, self._deliver, action)
                return
            self._perform(action)

    def _deliver(self, action: _Action) -> None:
        self.timer = None
        self.waiting = False
        self._perform(action)
        self._process()

    def _perform(self, action: _Action) -> None:
        transport = self.transport
        if transport is None:
            return
        if action.kind == "respond":
            transport.write(action.data)
            if action.close:
                transport.close()
                self.transport = None
        elif action.kind == "reset":
            transport.write(action.data)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            self.transport = None
        else:  # a stall ends by dropping the connection
            transport.abort()
            self.transport = None

    def _reply_and_close(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.transport.close()
            self.transport = None


# -- running it -------------------------------------------------------------------------------------

class MockURL(str):
    """The base URL of a running mock (e.g. http://127.0.0.1:40123), with its server at hand."""

    server: MockModelServer

    @property
    def chat_url(self) -> str:
        return f"{self}/v1/chat/completions"

    @property
    def completions_url(self) -> str:
        return f"{self}/v1/completions"

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def reset_stats(self) -> None:
        self.server.reset_stats()


@contextlib.contextmanager
def serve_in_thread(answerer: Answerer | None = None, options: ServerOptions | None = None,
                    **option_fields: Any) -> Iterator[MockURL]:
    """Run a mock on 127.0.0.1 (a free port) in a background thread for the duration of the block.

    `option_fields` are ServerOptions fields, e.g. serve_in_thread(latency=0.01, faults=FaultPlan(...)).
    """
    if options is None:
        options = ServerOptions(**option_fields)
    elif option_fields:
        raise TypeError("pass either options or option fields, not both")
    server = MockModelServer(answerer, options)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    bound: list[Any] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            bound.append(loop.run_until_complete(server.start("127.0.0.1", 0)))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
            bound.append(error)
        started.set()
        if isinstance(bound[0], tuple):
            loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=run, name="mock-model", daemon=True)
    thread.start()
    started.wait()
    if isinstance(bound[0], BaseException):
        thread.join()
        raise bound[0]
    url = MockURL(f"http://127.0.0.1:{bound[0][1]}")
    url.server = server
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def serve_in_subprocess(argv: Sequence[str] = (), *, python: str | None = None,
                        startup_timeout: float = 30.0) -> Iterator[str]:
    """Run `flageval mock-model --port 0 …argv` in its own process; yields its base URL."""
    command = [python or sys.executable, "-m", "flageval.mock_model.server", "--host", "127.0.0.1", "--port", "0",
               *argv]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        line = ""
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("listening on "):
                break
            if not line and process.poll() is not None:
                raise RuntimeError(f"mock model exited: {process.stderr.read().strip() if process.stderr else ''}")
        else:
            raise RuntimeError("mock model did not start in time")
        yield line.split("listening on ", 1)[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flageval mock-model",
        description="OpenAI-compatible reference model: answers benchmark questions right with a set probability.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9010, help="0 picks a free port (printed on start)")
    parser.add_argument("--accuracy", type=float, default=0.75, help="probability of answering a question right")
    parser.add_argument("--seed", type=int, default=0, help="which questions are answered right, and the faults")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="plus a uniform random [0, this) seconds")
    parser.add_argument("--truncate-rate", type=float, default=0.0,
                        help="share of questions whose chat answer is cut in half with finish_reason 'length'")
    parser.add_argument("--rephrase-rate", type=float, default=0.0,
                        help="share of questions whose chat answer opens with another sentence (same answer)")
    parser.add_argument("--no-usage", action="store_true", help="send no usage in answers")
    parser.add_argument("--fault-rate", default="",
                        help="fraction of requests that fail: a number spread over --faults, or kind=rate pairs "
                             f"(kinds: {', '.join(FAULT_KINDS)})")
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULT_KINDS),
                        help="kinds a bare --fault-rate number is spread over")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429/503")
    parser.add_argument("--stall-seconds", type=float, default=3600.0, help="how long a stalled request hangs")
    parser.add_argument("--model", default=None, help="served model name; other names get 404 (default: any)")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--echo-auth", action="store_true",
                        help="error answers quote the request's Authorization header (to test that clients hide it)")
    parser.add_argument("--reasoning-field", action="store_true",
                        help="with thinking on, put reasoning in reasoning_content instead of <think> in content")
    parser.add_argument("--data-dir", default=None,
                        help="benchmark data the answers come from (default: FLAGEVAL_DATA_DIR, else the evaluator's default)")
    parser.add_argument("--answerer", choices=("benchmarks", "echo", "fixed"), default="benchmarks",
                        help="'echo' repeats the question, 'fixed' always says --fixed-text (no data needed)")
    parser.add_argument("--fixed-text", default="The answer is 42.\n#### 42")
    parser.add_argument("--tasks", default="",
                        help="lm-eval tasks, groups or an NLP suite (e.g. 'classic') to answer too, comma-separated")
    parser.add_argument("--tasks-limit", type=int, default=None, help="learn only the first N documents of each task")
    parser.add_argument("--include-path", type=Path, action="append", default=[],
                        help="a folder of lm-eval task YAML files (repeatable)")
    return parser


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    plan = FaultPlan(parse_fault_rates(args.fault_rate, kinds), seed=args.seed, retry_after=args.retry_after,
                     stall_seconds=args.stall_seconds)
    return ServerOptions(latency=args.latency, latency_jitter=args.latency_jitter, faults=plan,
                         served_model=args.model, api_key=args.api_key, reasoning_field=args.reasoning_field,
                         seed=args.seed, echo_auth=args.echo_auth, usage=not args.no_usage,
                         truncate_rate=args.truncate_rate, rephrase_rate=args.rephrase_rate)


def make_answerer(args: argparse.Namespace) -> Answerer:
    if args.answerer == "echo":
        return EchoAnswerer()
    if args.answerer == "fixed":
        return FixedAnswerer(args.fixed_text)
    from flageval.datasets import default_data_dir
    from flageval.mock_model.answers import default_answerer

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not data_dir.is_dir():
        raise ValueError(f"benchmark data directory {data_dir} does not exist (set --data-dir or FLAGEVAL_DATA_DIR)")
    answerer = default_answerer(data_dir, args.accuracy, args.seed)
    if args.tasks:
        from flageval.mock_model.answers_tasks import TaskAnswerer, task_names

        answerer = TaskAnswerer(data_dir, task_names(args.tasks), args.accuracy, args.seed, fallback=answerer,
                                limit=args.tasks_limit, include_paths=args.include_path)
    return answerer


async def _serve_forever(server: MockModelServer, host: str, port: int) -> None:
    bound_host, bound_port = await server.start(host, port)
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
    print(f"listening on http://{shown}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
        answerer = make_answerer(args)
    except Exception as error:  # noqa: BLE001 - bad options or unreadable data: one line, no traceback
        print(f"flageval mock-model: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_forever(MockModelServer(answerer, options), args.host, args.port))
    except OSError as error:
        print(f"flageval mock-model: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
