"""The worker pool: `num_concurrent` workers pull work items lazily, send them, score, journal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from flageval.api import Progress, SampleRecord
from flageval.api.results import CallStat
from flageval.engine import metrics
from flageval.engine.cache import ResponseCache
from flageval.engine.client import (
    Breaker,
    EndpointClient,
    RetryPolicy,
    SampleFailed,
    canonical_json,
    chat_choice,
    completion_choices,
    reply_from_chat_choice,
    reply_from_completion_choice,
)
from flageval.engine.journal import Journal
from flageval.engine.progress import ProgressTracker
from flageval.engine.redact import redact_data_urls
from flageval.engine.transport import Transport, build_transport
from flageval.engine.types import Endpoint, Reply, WorkItem

log = logging.getLogger(__name__)

ScoreFn = Callable[[WorkItem, list[Reply]], SampleRecord]


@dataclass
class RunSummary:
    done: int  # samples that succeeded, including those already in the journal
    failed: int  # samples that failed in this run (journaled with their error)
    skipped_from_journal: int
    requests_sent: int  # HTTP attempts, retries included; cache hits send nothing
    last_error: str | None
    elapsed: float
    cache_hits: int = 0


def _single_completion(data: Any) -> list[dict[str, Any]]:
    return completion_choices(data, 1)


def error_record(item: WorkItem, message: str) -> SampleRecord:
    # Pictures travel as data URLs: a journal keeps a short description of each, never the bytes.
    prompts = [redact_data_urls(body.get("messages", body.get("prompt"))) for body in item.bodies]
    return SampleRecord(id=item.id, index=item.index, prompt=prompts[0] if len(prompts) == 1 else prompts,
                        error=message)


@dataclass
class _Request:
    item: int  # position in the group
    body: int  # position in the item's bodies
    full: dict[str, Any]
    payload: bytes
    key: str | None
    call: CallStat


def _answered(call: CallStat, reply: Reply) -> CallStat:
    call.finish_reason = reply.finish_reason
    if not reply.cached:
        metrics.answered(reply.finish_reason, call.output_tokens)
    return call


class _Run:
    def __init__(self, endpoint: Endpoint, items: Iterable[WorkItem], score: ScoreFn, journal: Journal,
                 cache: ResponseCache | None, transport: Transport, policy: RetryPolicy,
                 tracker: ProgressTracker) -> None:
        self.endpoint = endpoint
        self.items: Iterator[WorkItem] = iter(items)
        self.exhausted = False
        self.score = score
        self.journal = journal
        self.cache = cache
        self.finished_ids = journal.finished_ids()
        self.breaker = Breaker(policy)
        self.sender = EndpointClient(endpoint, transport, policy, self.breaker)
        self.tracker = tracker
        self.last_error: str | None = None
        self.chat = endpoint.kind == "chat"
        self.batch_size = 1 if self.chat else max(1, endpoint.batch_size)
        self._exported = (0, 0, 0)

    def next_item(self) -> WorkItem | None:
        while not self.exhausted:
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                return None
            if item.id in self.finished_ids:
                self.tracker.skip()
                continue
            return item
        return None

    def next_group(self) -> list[WorkItem]:
        """One item on chat endpoints; on completions, items until they hold batch_size prompts."""
        group: list[WorkItem] = []
        bodies = 0
        while bodies < self.batch_size:
            item = self.next_item()
            if item is None:
                break
            group.append(item)
            bodies += max(1, len(item.bodies))
        return group

    async def worker(self) -> None:
        while True:
            group = self.next_group()
            if not group:
                return
            if len(group) == 1 and len(group[0].bodies) == 1:
                await self.process_one(group[0])
            else:
                await self.process(group)

    async def process_one(self, item: WorkItem) -> None:
        """The common case, one sample with one request, without the bookkeeping of `process`."""
        full = self.sender.full_body(item.bodies[0])
        payload = canonical_json(full)
        cache = self.cache
        key = cache.key(payload) if cache is not None else None
        if key is not None:
            choice = cache.get(key)  # type: ignore[union-attr]
            if choice is not None:
                try:
                    reply = (reply_from_chat_choice if self.chat else reply_from_completion_choice)(choice, cached=True)
                except ValueError:
                    pass
                else:
                    self.finish(item, [reply], None, [CallStat(cached=True, finish_reason=reply.finish_reason)])
                    return
        call = CallStat()
        if self.breaker.open:
            metrics.SAMPLE_ERRORS.labels(reason="breaker").inc()
            self.finish(item, None, SampleFailed(self.breaker.reason or "endpoint given up on"), [call])
            return
        deadline = time.monotonic() + self.endpoint.retry_time
        try:
            if self.chat:
                choice, reply = await self.sender.post(payload, deadline, chat_choice, call)
            else:
                choice = (await self.sender.post(payload, deadline, _single_completion, call))[0]
                choice = {k: v for k, v in choice.items() if k != "index"}
                reply = reply_from_completion_choice(choice)
        except SampleFailed as failure:
            self.finish(item, None, failure, [call])
            return
        if key is not None:
            cache.put(key, choice)  # type: ignore[union-attr]
        self.finish(item, [reply], None, [_answered(call, reply)])

    async def process(self, group: list[WorkItem]) -> None:
        deadline = time.monotonic() + self.endpoint.retry_time
        replies: list[list[Reply | None]] = [[None] * len(item.bodies) for item in group]
        calls: list[list[CallStat]] = [[CallStat() for _ in item.bodies] for item in group]
        errors: dict[int, SampleFailed] = {}
        pending: list[_Request] = []
        parse_cached = reply_from_chat_choice if self.chat else reply_from_completion_choice
        for i, item in enumerate(group):
            for j, body in enumerate(item.bodies):
                full = self.sender.full_body(body)
                payload = canonical_json(full)
                key = self.cache.key(payload) if self.cache is not None else None
                choice = self.cache.get(key) if key is not None else None
                if choice is not None:
                    try:
                        replies[i][j] = reply = parse_cached(choice, cached=True)
                        calls[i][j] = CallStat(cached=True, finish_reason=reply.finish_reason)
                        continue
                    except ValueError:
                        pass
                pending.append(_Request(i, j, full, payload, key, calls[i][j]))

        if pending:
            if self.breaker.open:
                metrics.SAMPLE_ERRORS.labels(reason="breaker").inc(len({r.item for r in pending}))
                for request in pending:
                    errors.setdefault(request.item, SampleFailed(self.breaker.reason or "endpoint given up on"))
            elif self.chat:
                await self._send_chat(pending, deadline, replies, errors)
            else:
                await self._send_completions(pending, deadline, replies, errors)

        for i, item in enumerate(group):
            if i not in errors:
                for call, reply in zip(calls[i], replies[i]):
                    if reply is not None and not reply.cached:
                        _answered(call, reply)
            self.finish(item, None if i in errors else replies[i], errors.get(i), calls[i])  # type: ignore[arg-type]

    def finish(self, item: WorkItem, replies: list[Reply] | None, failure: SampleFailed | None,
               calls: list[CallStat] | None = None) -> None:
        """Score (or record the failure of) one sample and journal it, with its requests' figures."""
        if failure is None:
            try:
                record = self.score(item, replies)  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - a scoring bug must not stop the other samples
                failure = SampleFailed(f"scoring failed: {type(error).__name__}: {error}", endpoint_level=False)
        if failure is not None:
            record = error_record(item, str(failure))
            self.breaker.failure(failure)
        record.calls = calls
        self.journal.append(record)
        ok = record.error is None
        if not ok:
            self.last_error = record.error
        self.tracker.finish(ok)

    def export_metrics(self) -> None:
        """Sample counts and cache lookups since the last call → Prometheus (off the per-request path)."""
        tracker, (ok, failed, skipped) = self.tracker, self._exported
        metrics.SAMPLES_OK.inc(tracker.done - tracker.skipped - ok)
        metrics.SAMPLES_FAILED.inc(tracker.failed - failed)
        metrics.SAMPLES_SKIPPED.inc(tracker.skipped - skipped)
        self._exported = (tracker.done - tracker.skipped, tracker.failed, tracker.skipped)
        if self.cache is not None:
            self.cache.flush_index()
            self.cache.export_metrics()

    async def _send_chat(self, pending: list[_Request], deadline: float,
                         replies: list[list[Reply | None]], errors: dict[int, SampleFailed]) -> None:
        for request in pending:
            if request.item in errors:
                continue
            try:
                choice, reply = await self.sender.post(request.payload, deadline, chat_choice, request.call)
            except SampleFailed as failure:
                errors[request.item] = failure
                continue
            if request.key is not None and self.cache is not None:
                self.cache.put(request.key, choice)
            replies[request.item][request.body] = reply

    async def _send_completions(self, pending: list[_Request], deadline: float,
                                replies: list[list[Reply | None]], errors: dict[int, SampleFailed]) -> None:
        # Only bodies that differ in nothing but the prompt share a call.
        by_params: dict[bytes, list[_Request]] = {}
        for request in pending:
            params = {k: v for k, v in request.full.items() if k != "prompt"}
            by_params.setdefault(canonical_json(params), []).append(request)
        for similar in by_params.values():
            for start in range(0, len(similar), self.batch_size):
                chunk = [r for r in similar[start:start + self.batch_size] if r.item not in errors]
                if not chunk:
                    continue
                if len(chunk) == 1:
                    payload = chunk[0].payload
                else:
                    batched = dict(chunk[0].full)
                    batched["prompt"] = [r.full["prompt"] for r in chunk]
                    payload = canonical_json(batched)
                n = len(chunk)
                shared = chunk[0].call  # one HTTP request: its latency and failures are each prompt's
                try:
                    choices = await self.sender.post(payload, deadline, lambda data, n=n: completion_choices(data, n), shared)
                except SampleFailed as failure:
                    for request in chunk:  # the batch's failed attempts stay on its first prompt's call: counted once
                        errors.setdefault(request.item, failure)
                    continue
                # The batch's tokens, spread over its prompts so that their sum stays the service's count.
                tokens = shared.output_tokens
                for position, request in enumerate(chunk):
                    request.call.latency = shared.latency
                    request.call.output_tokens = None if tokens is None else tokens // n + (position < tokens % n)
                    if position:  # the batch's failed attempts count once
                        request.call.failures, request.call.retries = {}, {}
                for request, choice in zip(chunk, choices):
                    choice = {k: v for k, v in choice.items() if k != "index"}
                    if request.key is not None and self.cache is not None:
                        self.cache.put(request.key, choice)
                    replies[request.item][request.body] = reply_from_completion_choice(choice)


async def run_dataset(endpoint: Endpoint, items: Iterable[WorkItem], score: ScoreFn,
                      journal: Journal, cache: ResponseCache | None, *, dataset: str, total: int,
                      on_progress: Callable[[Progress], None] | None = None, progress_interval: float = 0.5,
                      client: httpx.AsyncClient | None = None,
                      retry_policy: RetryPolicy | None = None) -> RunSummary:
    """Evaluate every item not already finished in the journal; every finished sample is journaled.

    A sample that cannot be answered is journaled with its error and the run goes on. When the
    endpoint fails sample after sample (see RetryPolicy.breaker_*), the remaining samples are journaled
    as failed without being sent. On cancellation the journal is flushed before CancelledError
    propagates. Progress events go to `on_progress` at most every `progress_interval` seconds and once
    at the end. The caller owns `journal`, `cache` and a `client` it passes in; without a client,
    requests go over engine.transport's lean HTTP/1.1 connections (httpx when a proxy applies).
    """
    tracker = ProgressTracker(dataset, total)
    hits_before = cache.hits if cache is not None else 0
    transport = build_transport(endpoint.url, max(1, endpoint.num_concurrent), endpoint.request_timeout, client,
                                endpoint.url_policy)
    run = _Run(endpoint, items, score, journal, cache, transport, retry_policy or RetryPolicy(), tracker)

    def emit(force: bool = False) -> None:
        if on_progress is not None and (tracker.changed() or force):
            try:
                on_progress(tracker.snapshot())
            except Exception:
                log.exception("progress callback failed")

    async def report() -> None:
        while True:
            await asyncio.sleep(max(0.01, progress_interval))
            emit()
            run.export_metrics()
            if journal.flush_due():
                await journal.flush_in_background()

    reporter = asyncio.create_task(report())
    workers = [asyncio.create_task(run.worker()) for _ in range(max(1, endpoint.num_concurrent))]
    try:
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
    finally:
        reporter.cancel()
        with contextlib.suppress(BaseException):
            await reporter
        journal.flush()
        run.export_metrics()
        await transport.aclose()
        emit(force=True)
    return RunSummary(done=tracker.done, failed=tracker.failed, skipped_from_journal=tracker.skipped,
                      requests_sent=run.sender.requests_sent, last_error=run.last_error,
                      elapsed=time.monotonic() - tracker.started, cache_hits=cache.hits - hits_before if cache is not None else 0)
