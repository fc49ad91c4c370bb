"""Helpers for the engine tests: work items the echo mock answers, a scorer, a runner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.engine import (
    Endpoint,
    Journal,
    ResponseCache,
    RetryPolicy,
    RunSummary,
    WorkItem,
    run_dataset,
)
from flageval.mock_model.server import EchoAnswerer

FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


def chat_items(n: int, start: int = 0) -> Iterator[WorkItem]:
    for i in range(start, start + n):
        yield WorkItem(id=f"s/{i}", index=i, bodies=[{"messages": [{"role": "user", "content": f"q{i}"}]}],
                       meta=f"q{i}")


def completion_items(n: int, prompts_per_item: int = 1) -> Iterator[WorkItem]:
    for i in range(n):
        bodies = [{"prompt": f"p{i}.{k}", "max_tokens": 8} for k in range(prompts_per_item)]
        yield WorkItem(id=f"c/{i}", index=i, bodies=bodies, meta=[f"p{i}.{k}" for k in range(prompts_per_item)])


def echo_score(item: WorkItem, replies: list) -> SampleRecord:
    """Chat: right when the echo equals the question; completions: when each text names its own prompt."""
    if "messages" in item.bodies[0]:
        response: Any = replies[0].text
        right = response == item.meta
    else:
        response = [r.text for r in replies]
        right = response == [f" re:{p}" for p in item.meta]
    return SampleRecord(id=item.id, index=item.index, prompt=item.meta, response=response, target=item.meta,
                        scores={"exact_match": float(right)})


class RecordingAnswerer(EchoAnswerer):
    """Echo, keeping every body it was asked (to check what the engine sent)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def chat(self, messages, body):
        self.bodies.append(body)
        return super().chat(messages, body)

    def completion(self, prompt, body):
        self.bodies.append(body)
        return super().completion(prompt, body)


def run(endpoint: Endpoint, items: Iterable[WorkItem], work: Path, *, cache: bool | ResponseCache = False,
        policy: RetryPolicy = FAST, score=echo_score, total: int | None = None, journal: Journal | None = None,
        **kwargs: Any) -> tuple[RunSummary, list[SampleRecord]]:
    items = list(items) if total is None else items
    own_journal = journal is None
    journal = journal or Journal(work / "journal.jsonl")
    response_cache = cache if isinstance(cache, ResponseCache) else (
        ResponseCache(work / "cache", endpoint.url, endpoint.model) if cache else None)
    try:
        summary = asyncio.run(run_dataset(endpoint, items, score, journal, response_cache, dataset="test",
                                          total=total if total is not None else len(items),  # type: ignore[arg-type]
                                          retry_policy=policy, **kwargs))
        records = journal.records()
    finally:
        if own_journal:
            journal.close()
        if response_cache is not None and not isinstance(cache, ResponseCache):
            response_cache.close()
    return summary, records


def essence(records: list[SampleRecord]) -> list[tuple]:
    return [(r.id, r.index, r.response, r.scores, r.error) for r in records]
