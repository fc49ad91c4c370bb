"""HTTP to one OpenAI-compatible endpoint: request bodies, replies, and retries with backoff under a deadline."""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from flageval.api.results import CallStat
from flageval.engine import metrics
from flageval.engine.redact import redact_secret
from flageval.engine.transport import (
    AddressRefused,
    Transport,
    TransportError,
    TransportTimeout,
)
from flageval.engine.types import Endpoint, Reply

# Transient by HTTP semantics; every other 4xx means the request itself is wrong and would fail again.
RETRYABLE_4XX = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Errors that say "this endpoint is wrong" (rather than "this sample is wrong"): they count toward the breaker.
ENDPOINT_LEVEL_4XX = frozenset({401, 403, 404, 405})

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def canonical_json(body: dict[str, Any]) -> bytes:
    """The bytes sent and hashed: sorted keys, no spaces, UTF-8 (orjson: a tenth of json's time)."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def split_thinking(content: str) -> tuple[str, str | None]:
    """(answer text, reasoning) from message content that may carry <think>…</think> reasoning.

    Removes every complete block, a leading reasoning that only has its closing tag (servers whose
    chat template opens <think> in the prompt), and an opened block that never closes (the model ran
    out of tokens while thinking: no answer).
    """
    if "think>" not in content:
        return content, None
    parts: list[str] = []
    if "</think>" in content:
        head, _, rest = content.partition("</think>")
        if "<think>" not in head:
            parts.append(head)
            content = rest

    def keep(match: re.Match[str]) -> str:
        parts.append(match.group(1))
        return ""

    content = _THINK_BLOCK.sub(keep, content)
    if "<think>" in content:
        content, _, unfinished = content.partition("<think>")
        parts.append(unfinished)
    if not parts:
        return content, None
    reasoning = "\n".join(p.strip() for p in parts if p.strip())
    return content.strip(), reasoning or None


class MalformedResponse(ValueError):
    """A 2xx answer whose body is not an OpenAI response: retried like a server error."""


def reply_from_chat_choice(choice: Any, *, cached: bool = False) -> Reply:
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise MalformedResponse("choice has no message")
    message = choice["message"]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedResponse("message content is not a string")
    text, inline_reasoning = split_thinking(content or "")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if inline_reasoning:
        reasoning = f"{reasoning}\n{inline_reasoning}" if reasoning else inline_reasoning
    return Reply(text=text, reasoning=reasoning, logprobs=choice.get("logprobs"),
                 finish_reason=choice.get("finish_reason"), cached=cached)


def reply_from_completion_choice(choice: Any, *, cached: bool = False) -> Reply:
    if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
        raise MalformedResponse("choice has no text")
    return Reply(text=choice["text"], logprobs=choice.get("logprobs"),
                 finish_reason=choice.get("finish_reason"), cached=cached)


def chat_choice(data: Any) -> tuple[dict[str, Any], Reply]:
    """The first choice and its reply (parsing it checks the shape before the choice is cached)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("no choices in the response")
    choice = choices[0]
    return choice, reply_from_chat_choice(choice)


def completion_choices(data: Any, n_prompts: int) -> list[dict[str, Any]]:
    """Choices in prompt order, matched by their `index`; each checked to hold text."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("no choices in the response")
    ordered: list[dict[str, Any] | None] = [None] * n_prompts
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise MalformedResponse("a choice is not an object")
        index = choice.get("index", position)
        if not isinstance(index, int) or not 0 <= index < n_prompts:
            raise MalformedResponse(f"choice index {index!r} does not match any of the {n_prompts} prompts")
        reply_from_completion_choice(choice)
        ordered[index] = choice
    missing = [i for i, c in enumerate(ordered) if c is None]
    if missing:
        raise MalformedResponse(f"{len(missing)} of {n_prompts} prompts got no choice")
    return ordered  # type: ignore[return-value]


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts (exponential, full jitter) and when to stop trying the endpoint at all."""

    base_delay: float = 0.5
    max_delay: float = 30.0
    # The endpoint is given up on (remaining samples fail unsent) after this many samples in a row
    # failed for endpoint-level reasons; before any request has succeeded one such sample is enough.
    breaker_after: int = 3
    breaker_before_success: int = 1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay·2^(attempt-1))]."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(attempt - 1, 62)))
        return (rng or random).uniform(0, ceiling)


def completion_tokens(data: Any) -> int | None:
    """usage.completion_tokens of an answer; None when the service sent no usage."""
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def _count(call: CallStat | None, field: str, kind: str) -> None:
    if call is not None and kind:
        counts = getattr(call, field)
        counts[kind] = counts.get(kind, 0) + 1


class SampleFailed(Exception):
    """A request that will not succeed: out of attempts, past its deadline, or refused by the endpoint."""

    def __init__(self, message: str, *, endpoint_level: bool = True) -> None:
        super().__init__(message)
        self.endpoint_level = endpoint_level


class Breaker:
    """Counts samples that failed because of the endpoint; when open, nothing more is sent."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.succeeded = False
        self.consecutive_failures = 0
        self.reason: str | None = None

    @property
    def open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        self.succeeded = True
        self.consecutive_failures = 0

    def failure(self, error: SampleFailed) -> None:
        if not error.endpoint_level or self.open:
            return
        self.consecutive_failures += 1
        limit = self.policy.breaker_after if self.succeeded else self.policy.breaker_before_success
        if self.consecutive_failures >= max(1, limit):
            self.reason = (f"not sent: the endpoint failed {self.consecutive_failures} sample(s) in a row; "
                           f"last error: {error}")


class EndpointClient:
    """Sends request bodies to one endpoint with retries; every call is bounded by the caller's deadline."""

    def __init__(self, endpoint: Endpoint, transport: Transport, policy: RetryPolicy,
                 breaker: Breaker | None = None, rng: random.Random | None = None) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.policy = policy
        self.breaker = breaker
        self.rng = rng or random.Random()
        self.requests_sent = 0
        self.last_error: str | None = None
        self.headers = {"content-type": "application/json"}
        if endpoint.api_key:
            self.headers["authorization"] = f"Bearer {endpoint.api_key}"

    def full_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """What is sent for one dataset body: model, the user's gen_kwargs fields, thinking switch.

        The user's gen_kwargs override the dataset's generation settings, as lm-eval's --gen_kwargs
        update a task's generation_kwargs. Completions bodies with `echo` score a given text rather
        than generate, so generation settings are not added to them.
        """
        full = dict(body)
        full["model"] = self.endpoint.model
        chat = self.endpoint.kind == "chat"
        if chat or not body.get("echo"):
            full.update(self.endpoint.gen_fields)
        if chat and self.endpoint.thinking:
            template_kwargs = dict(full.get("chat_template_kwargs") or {})
            template_kwargs.setdefault("enable_thinking", True)
            full["chat_template_kwargs"] = template_kwargs
        return full

    async def post(self, payload: bytes, deadline: float, parse, call: CallStat | None = None) -> Any:
        """POST payload until `parse(json)` accepts an answer; raise SampleFailed when it cannot.

        Attempts: at most endpoint.num_retry. Waits: Retry-After on 429/503, else full-jitter backoff.
        Nothing is attempted or waited for past `deadline` (a time.monotonic() value). `call`, when given,
        gets the answering attempt's latency and usage, and each failed and retried attempt's kind.
        """
        endpoint = self.endpoint
        attempts = max(1, endpoint.num_retry)
        last = "no attempt made"
        for attempt in range(1, attempts + 1):
            if self.breaker is not None and self.breaker.open:
                raise SampleFailed(self.breaker.reason or "endpoint given up on")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._give_up(f"retry_time ({endpoint.retry_time:g}s) exhausted after {attempt - 1} attempt(s); "
                                    f"last error: {last}")
            retry_after: float | None = None
            kind = ""  # the failed attempt's kind, for the call's counts
            timeout = min(endpoint.request_timeout, remaining)
            started = time.monotonic()
            self.requests_sent += 1
            try:
                response = await self.transport.post(payload, self.headers, timeout)
            except AddressRefused as error:
                self.last_error = f"not sent: eval_url {error}"
                metrics.SAMPLE_ERRORS.labels(reason="refused").inc()
                raise SampleFailed(self.last_error) from None
            except TransportTimeout:
                last, kind = f"no answer within {timeout:.3g}s from {endpoint.url}", "timeout"
                metrics.observe_attempt("timeout", time.monotonic() - started)
            except TransportError as error:
                last, kind = f"cannot reach {endpoint.url}: {error}", "connection_error"
                metrics.observe_attempt("connection_error", time.monotonic() - started)
            else:
                elapsed = time.monotonic() - started
                status = response.status
                if 200 <= status < 300:
                    try:
                        data = orjson.loads(response.content)
                        result = parse(data)
                    except (ValueError, TypeError, KeyError, AttributeError) as error:
                        reason = str(error) if isinstance(error, MalformedResponse) else "body is not JSON"
                        last = f"unusable answer from {endpoint.url} ({reason}): {self._excerpt(response.text)}"
                        kind = "malformed"
                        metrics.observe_attempt("malformed", elapsed)
                    else:
                        metrics.observe_attempt("ok", elapsed)
                        if self.breaker is not None:
                            self.breaker.success()
                        if call is not None:
                            call.latency = elapsed
                            call.output_tokens = completion_tokens(data)
                        return result
                else:
                    last = f"HTTP {status} from {endpoint.url}: {self._excerpt(response.text) or '(empty body)'}"
                    kind = f"http_{status}"
                    retryable = status >= 500 or status in RETRYABLE_4XX
                    metrics.observe_attempt(f"http_{status // 100}xx", elapsed)
                    if not retryable:
                        self.last_error = last
                        _count(call, "failures", kind)
                        metrics.SAMPLE_ERRORS.labels(reason="rejected").inc()
                        raise SampleFailed(last, endpoint_level=status in ENDPOINT_LEVEL_4XX or status < 400)
                    if status in RETRY_AFTER_STATUSES:
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
            self.last_error = last
            _count(call, "failures", kind)
            if attempt == attempts:
                break
            delay = retry_after if retry_after is not None else self.policy.delay(attempt, self.rng)
            if time.monotonic() + delay >= deadline:
                raise self._give_up(f"retry_time ({endpoint.retry_time:g}s) would pass before the next attempt "
                                    f"(after {attempt} attempt(s)); last error: {last}")
            metrics.RETRIES.inc()
            metrics.retried(kind)
            _count(call, "retries", kind)
            await asyncio.sleep(delay)
        raise self._give_up(f"failed after {attempts} attempt(s); last error: {last}")

    def _excerpt(self, text: str) -> str:
        """An answer's text as errors quote it: without the API key (an endpoint may quote the request's
        Authorization header in its error body), then shortened."""
        return excerpt(redact_secret(text, self.endpoint.api_key))

    def _give_up(self, message: str) -> SampleFailed:
        metrics.SAMPLE_ERRORS.labels(reason="out_of_retries").inc()
        return SampleFailed(message)
