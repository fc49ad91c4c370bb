"""Serving figures: what the engine measures per (service, dataset) equals what the reference model injected."""

from __future__ import annotations

import statistics

from flageval.api import SampleRecord
from flageval.api.results import CallStat
from flageval.engine import Endpoint, ResponseCache, RetryPolicy, WorkItem
from flageval.engine.serving import serving_figures
from flageval.mock_model.server import FaultPlan, count_tokens, serve_in_thread
from support.engine_helpers import run


def long_items(n: int):
    for i in range(n):
        text = f"question {i}: " + " ".join(f"word{k}" for k in range(12 + i % 7))
        yield WorkItem(id=f"s/{i}", index=i, bodies=[{"messages": [{"role": "user", "content": text}]}], meta=text)


def score(item, replies):
    return SampleRecord(id=item.id, index=item.index, prompt=item.meta, response=replies[0].text, target=item.meta,
                        scores={"exact_match": float(replies[0].text == item.meta)})


def endpoint(url) -> Endpoint:
    return Endpoint(url=url.chat_url, model="mock", num_concurrent=8, num_retry=10)


def test_figures_match_what_the_reference_model_injected(tmp_path):
    faults = FaultPlan({"503": 0.10}, seed=5, retry_after=0.01)
    with serve_in_thread(latency=0.18, latency_jitter=0.04, truncate_rate=0.05, faults=faults, seed=5) as url:
        summary, records = run(endpoint(url), long_items(200), tmp_path, score=score,
                               policy=RetryPolicy(base_delay=0.001, max_delay=0.01))
        stats = url.stats()
        injected = list(url.server.delays)
    figures = serving_figures(records)
    assert summary.failed == 0 and figures is not None
    assert figures.requests == stats["answered"] == 200 and figures.cached == 0
    # latency: 200 ms ± 20 ms injected; the measured median within 10 % of the injected one
    assert abs(figures.latency_p50_ms - statistics.median(injected) * 1000) <= 0.10 * statistics.median(injected) * 1000
    assert figures.latency_p50_ms <= figures.latency_p90_ms <= figures.latency_p99_ms
    # truncation: exactly the answers the model cut, about 5 % of them
    assert stats["truncated"] > 0
    assert figures.truncated == stats["truncated"]
    assert figures.truncated_percent == round(100 * stats["truncated"] / 200, 2)
    assert 2 <= figures.truncated_percent <= 9
    # 503s: every one the model served was retried, and counted under its kind
    assert stats["faults"]["503"] >= 10
    assert figures.errors == {"http_503": stats["faults"]["503"]}
    assert figures.retries == {"http_503": stats["faults"]["503"]}
    # tokens: the model's usage, which counts the words of what it sent
    sent = [count_tokens(r.response) for r in records]
    assert figures.usage_reported == 200
    assert figures.output_tokens_per_request == round(sum(sent) / 200, 1)
    latency = sum(c.latency for r in records for c in r.calls)
    assert figures.output_tokens_per_second == round(sum(sent) / latency, 1)
    assert figures.note == ""


def test_a_service_without_usage_is_said_to_send_none(tmp_path):
    with serve_in_thread(usage=False) as url:
        _, records = run(endpoint(url), long_items(20), tmp_path, score=score)
    figures = serving_figures(records)
    assert figures.requests == 20 and figures.usage_reported == 0
    assert figures.output_tokens_per_request is None and figures.output_tokens_per_second is None
    assert "sent no usage" in figures.note


def test_cache_hits_are_counted_apart_from_measured_answers(tmp_path):
    with serve_in_thread() as url:
        run(endpoint(url), long_items(10), tmp_path / "first", score=score, cache=True)
        _, again = run(endpoint(url), long_items(10), tmp_path / "second", score=score,
                       cache=ResponseCache(tmp_path / "first" / "cache", url.chat_url, "mock"))
    figures = serving_figures(again)
    assert (figures.requests, figures.cached, figures.latency_p50_ms) == (0, 10, None)


def test_figures_from_hand_made_calls():
    records = [SampleRecord(id="a", index=0, calls=[CallStat(cached=True, finish_reason="stop")]),
               SampleRecord(id="b", index=1, calls=[CallStat(latency=0.1, output_tokens=10, finish_reason="length")]),
               SampleRecord(id="c", index=2, error="failed", calls=[CallStat(failures={"timeout": 3}, retries={"timeout": 2})])]
    figures = serving_figures(records)
    assert (figures.requests, figures.cached, figures.truncated, figures.truncated_percent) == (1, 1, 1, 100.0)
    assert figures.errors == {"timeout": 3} and figures.retries == {"timeout": 2}
    assert figures.latency_p50_ms == 100.0 and figures.output_tokens_per_second == 100.0
    assert "response cache" in figures.note


def test_records_without_calls_have_no_figures():
    assert serving_figures([SampleRecord(id="a", index=0, scores={"x": 1.0})]) is None

