"""Serving figures of one (service, dataset) run, summed from its sample records' calls.

Computed from the records rather than counted while sending, so a resumed run's figures cover the
samples its earlier attempts answered too (their records, calls included, are in the journal)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from flageval.api.results import SampleRecord, ServingFigures


def serving_figures(records: Iterable[SampleRecord]) -> ServingFigures | None:
    """None when no record carries calls (records written before the engine kept them)."""
    latencies: list[float] = []
    tokens = token_seconds = 0.0
    reported = cached = requests = truncated = 0
    errors: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    seen = False
    for record in records:
        for call in record.calls or ():
            seen = True
            errors.update(call.failures)
            retries.update(call.retries)
            if call.cached:
                cached += 1
                continue
            if call.latency is None:  # never answered: its failures are all there is to count
                continue
            requests += 1
            latencies.append(call.latency)
            truncated += call.finish_reason == "length"
            if call.output_tokens is not None:
                reported += 1
                tokens += call.output_tokens
                token_seconds += call.latency
    if not seen:
        return None
    figures = ServingFigures(requests=requests, cached=cached, usage_reported=reported, truncated=truncated,
                             errors=dict(sorted(errors.items())), retries=dict(sorted(retries.items())))
    if latencies:
        p50, p90, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 90, 99])
        figures.latency_p50_ms, figures.latency_p90_ms, figures.latency_p99_ms = round(p50, 1), round(p90, 1), round(p99, 1)
        figures.latency_mean_ms = round(sum(latencies) * 1000.0 / len(latencies), 1)
        figures.truncated_percent = round(100.0 * truncated / requests, 2)
    if reported:
        figures.output_tokens_per_request = round(tokens / reported, 1)
        if token_seconds > 0:
            figures.output_tokens_per_second = round(tokens / token_seconds, 1)
    notes = []
    if requests and not reported:
        notes.append("the service sent no usage: no token figures")
    elif reported < requests:
        notes.append(f"token figures from the {reported} of {requests} answers that carried usage")
    if cached:
        notes.append(f"{cached} answer(s) came from the response cache and are not in these figures")
    figures.note = "; ".join(notes)
    return figures
