"""The engine against the reference server: retries, deadlines, batching, cache, journal, bounded pool."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

import pytest
from flageval.api import SampleRecord
from flageval.engine import Endpoint, Journal, ResponseCache, RetryPolicy, run_dataset
from flageval.mock_model.server import FAULT_KINDS, FaultPlan, serve_in_thread
from support.engine_helpers import (
    FAST,
    RecordingAnswerer,
    chat_items,
    completion_items,
    echo_score,
    essence,
    run,
)
from support.net import free_port


def chat_endpoint(url, **fields) -> Endpoint:
    fields.setdefault("num_concurrent", 8)
    fields.setdefault("num_retry", 10)
    return Endpoint(url=url.chat_url, model="mock", **fields)


@dataclass
class FirstAttemptFails(FaultPlan):
    """Every sample's first request gets `kind`; the next ones succeed."""

    kind: str = "503"

    def pick(self, key: str, nth: int) -> str | None:
        return self.kind if nth == 0 else None



# -- a clean run, and the same records under every kind of fault ---------------------------------------

def test_clean_run_scores_every_sample(tmp_path):
    with serve_in_thread() as url:
        summary, records = run(chat_endpoint(url), chat_items(40), tmp_path)
        assert url.stats()["total"] == 40
    assert (summary.done, summary.failed, summary.requests_sent, summary.last_error) == (40, 0, 40, None)
    assert [r.index for r in records] == list(range(40))
    assert all(r.scores == {"exact_match": 1.0} for r in records)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_thirty_percent_faults_of_one_kind_change_nothing(tmp_path, kind):
    with serve_in_thread() as url:
        _, clean = run(chat_endpoint(url), chat_items(60), tmp_path / "clean")
    plan = FaultPlan({kind: 0.3}, seed=7, retry_after=0.01, stall_seconds=5)
    with serve_in_thread(faults=plan) as url:
        summary, faulty = run(chat_endpoint(url, request_timeout=0.25), chat_items(60), tmp_path / "faulty")
        stats = url.stats()
    assert stats["faults"].get(kind, 0) >= 5  # the faults did happen…
    assert summary.requests_sent == stats["total"] > 60  # …were retried…
    assert summary.failed == 0 and essence(faulty) == essence(clean)  # …and changed no record


def test_thirty_percent_mixed_faults_change_nothing(tmp_path):
    with serve_in_thread() as url:
        _, clean = run(chat_endpoint(url), chat_items(80), tmp_path / "clean")
    plan = FaultPlan({kind: 0.05 for kind in FAULT_KINDS}, seed=3, retry_after=0.01, stall_seconds=5)
    with serve_in_thread(faults=plan) as url:
        summary, faulty = run(chat_endpoint(url, request_timeout=0.25), chat_items(80), tmp_path / "faulty")
        assert len(url.stats()["faults"]) == len(FAULT_KINDS)
    assert summary.failed == 0 and essence(faulty) == essence(clean)


# -- retry rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["503", "429"])
def test_retry_after_is_honoured(tmp_path, kind):
    with serve_in_thread(faults=FirstAttemptFails(kind=kind, retry_after=0.4)) as url:
        started = time.monotonic()
        # Backoff alone would wait at most 10 ms: the wait must come from Retry-After.
        summary, _ = run(chat_endpoint(url, num_concurrent=4), chat_items(4), tmp_path)
        elapsed = time.monotonic() - started
    assert summary.failed == 0 and summary.requests_sent == 8
    assert 0.4 <= elapsed < 3


def test_other_4xx_are_not_retried_and_quote_the_server(tmp_path):
    with serve_in_thread(served_model="the-real-model") as url:
        summary, records = run(chat_endpoint(url, num_concurrent=1), chat_items(5), tmp_path)
        sent = url.stats()["total"]
    assert sent == summary.requests_sent == 1  # one 404, then the endpoint is given up on
    assert summary.failed == 5 and summary.done == 0
    assert "HTTP 404" in records[0].error and "The model `mock` does not exist." in records[0].error
    assert all("HTTP 404" in r.error for r in records)
    assert "HTTP 404" in summary.last_error


def test_a_rejected_sample_does_not_stop_the_others(tmp_path):
    items = list(chat_items(10))
    items[3].bodies = [{"messages": "not a list"}]  # the server answers 400 for this one only
    with serve_in_thread() as url:
        summary, records = run(chat_endpoint(url, num_concurrent=2), items, tmp_path)
        assert url.stats()["total"] == 10
    assert summary.failed == 1 and summary.done == 9
    assert records[3].error.startswith("HTTP 400") and "'messages' must be" in records[3].error
    assert all(r.error is None for i, r in enumerate(records) if i != 3)


def test_unreachable_endpoint_fails_every_sample_quickly(tmp_path):
    endpoint = Endpoint(url=f"http://127.0.0.1:{free_port()}/v1/chat/completions", model="m", num_concurrent=4,
                        num_retry=10)
    started = time.monotonic()
    summary, records = run(endpoint, chat_items(500), tmp_path, policy=RetryPolicy(base_delay=0.01, max_delay=0.05))
    assert time.monotonic() - started < 5
    assert summary.failed == 500 and summary.done == 0 and len(records) == 500
    assert summary.requests_sent <= 4 * 10
    assert "cannot reach" in summary.last_error and "failed after 10 attempt(s)" in summary.last_error


def test_always_failing_server_fails_every_sample_with_the_last_error(tmp_path):
    with serve_in_thread(faults=FaultPlan({"500": 1.0})) as url:
        summary, records = run(chat_endpoint(url, num_concurrent=2, num_retry=3), chat_items(200), tmp_path)
    assert summary.failed == 200 and summary.requests_sent <= 2 * 3
    assert "HTTP 500" in summary.last_error and "internal error" in summary.last_error
    assert all(r.error for r in records)


def test_breaker_needs_consecutive_failures_once_the_endpoint_has_answered(tmp_path):
    policy = RetryPolicy(base_delay=0.001, max_delay=0.01, breaker_after=3)
    # Odd samples always fail, even ones always succeed: never three failures in a row.
    plan = FaultPlan(seed=0)
    plan.pick = lambda key, nth: "500" if int(key[1:]) % 2 else None  # type: ignore[method-assign]
    with serve_in_thread(faults=plan) as url:
        summary, records = run(chat_endpoint(url, num_concurrent=1, num_retry=2), chat_items(30), tmp_path,
                               policy=policy)
    assert summary.failed == 15 and summary.done == 15 and summary.requests_sent == 15 + 15 * 2
    assert all(("HTTP 500" in r.error) == (r.index % 2 == 1) for r in records if r.error) and records[0].error is None


def test_retry_time_bounds_a_sample_across_attempts(tmp_path):
    plan = FaultPlan({"stall": 1.0}, stall_seconds=30)
    with serve_in_thread(faults=plan) as url:
        endpoint = chat_endpoint(url, num_concurrent=3, retry_time=0.5, request_timeout=0.2, num_retry=100)
        started = time.monotonic()
        summary, records = run(endpoint, chat_items(3), tmp_path)
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 3
    assert summary.failed == 3
    assert "retry_time (0.5s)" in records[0].error and "no answer within" in records[0].error


def test_a_malformed_200_is_retried(tmp_path):
    with serve_in_thread(faults=FirstAttemptFails(kind="bad_json")) as url:
        summary, records = run(chat_endpoint(url), chat_items(5), tmp_path)
    assert summary.requests_sent == 10 and summary.failed == 0
    assert all(r.scores["exact_match"] == 1.0 for r in records)


# -- request bodies, thinking, batching -------------------------------------------------------------------

def test_body_gets_model_the_users_gen_fields_and_the_thinking_switch(tmp_path):
    answerer = RecordingAnswerer()
    items = list(chat_items(2))
    items[1].bodies[0]["temperature"] = 0.0
    with serve_in_thread(answerer) as url:
        endpoint = chat_endpoint(url, gen_fields={"temperature": 0.6, "max_tokens": 100}, thinking=True)
        _, records = run(endpoint, items, tmp_path)
    first, second = sorted(answerer.bodies, key=lambda b: b["messages"][0]["content"])
    assert first == {"messages": [{"role": "user", "content": "q0"}], "model": "mock", "temperature": 0.6,
                     "max_tokens": 100, "chat_template_kwargs": {"enable_thinking": True}}
    assert second["temperature"] == 0.6  # the user's gen_kwargs win over the dataset's, as in lm-eval
    assert [r.response for r in records] == ["q0", "q1"]  # the <think> block the server added is not scored


@pytest.mark.parametrize("reasoning_field", [False, True])
def test_thinking_is_kept_out_of_the_scored_text(tmp_path, reasoning_field):
    seen = []

    def score(item, replies):
        seen.append(replies[0])
        return echo_score(item, replies)

    with serve_in_thread(reasoning_field=reasoning_field) as url:
        summary, records = run(chat_endpoint(url, thinking=True), chat_items(3), tmp_path, score=score)
    assert summary.failed == 0 and all(r.scores["exact_match"] == 1.0 for r in records)
    assert all(reply.reasoning == "Let me work through this step by step." for reply in seen)
    assert all("think" not in reply.text for reply in seen)


@pytest.mark.parametrize("batch_size, prompts_per_item, calls", [(1, 1, 10), (4, 1, 3), (4, 2, 5), (3, 4, 20)])
def test_completions_are_batched_and_mapped_back(tmp_path, batch_size, prompts_per_item, calls):
    answerer = RecordingAnswerer()
    with serve_in_thread(answerer) as url:
        endpoint = Endpoint(url=url.completions_url, model="mock", num_concurrent=2, batch_size=batch_size)
        summary, records = run(endpoint, completion_items(10, prompts_per_item), tmp_path)
        stats = url.stats()
    assert stats["total"] == summary.requests_sent == calls
    assert summary.failed == 0 and all(r.scores["exact_match"] == 1.0 for r in records)
    prompts = [body["prompt"] for body in {id(body): body for body in answerer.bodies}.values()]
    assert max(len(p) if isinstance(p, list) else 1 for p in prompts) <= batch_size
    assert sum(stats["by_key"].values()) == 10 * prompts_per_item


def test_completions_with_different_parameters_are_not_batched_together(tmp_path):
    answerer = RecordingAnswerer()
    items = list(completion_items(4))
    items[1].bodies[0]["max_tokens"] = 1
    with serve_in_thread(answerer) as url:
        endpoint = Endpoint(url=url.completions_url, model="mock", num_concurrent=1, batch_size=4)
        summary, records = run(endpoint, items, tmp_path)
    assert summary.requests_sent == 2 and all(r.scores["exact_match"] == 1.0 for r in records)
    calls = {id(body): body for body in answerer.bodies}.values()
    assert sorted(len(b["prompt"]) if isinstance(b["prompt"], list) else 1 for b in calls) == [1, 3]


def test_batched_completions_survive_faults(tmp_path):
    with serve_in_thread() as url:
        endpoint = Endpoint(url=url.completions_url, model="mock", num_concurrent=3, batch_size=4)
        _, clean = run(endpoint, completion_items(40, 2), tmp_path / "clean")
    with serve_in_thread(faults=FaultPlan({"reset": 0.15, "bad_json": 0.15}, seed=5)) as url:
        endpoint = Endpoint(url=url.completions_url, model="mock", num_concurrent=3, batch_size=4)
        summary, faulty = run(endpoint, completion_items(40, 2), tmp_path / "faulty")
    assert summary.failed == 0 and essence(faulty) == essence(clean)


# -- response cache ------------------------------------------------------------------------------------

def test_cache_hit_sends_nothing_and_another_service_misses(tmp_path):
    cache_root = tmp_path / "cache"
    with serve_in_thread() as url:
        endpoint = chat_endpoint(url)
        with ResponseCache(cache_root, endpoint.url, endpoint.model) as cache:
            first, records_1 = run(endpoint, chat_items(20), tmp_path / "run1", cache=cache)
        assert (first.requests_sent, first.cache_hits) == (20, 0)
        with ResponseCache(cache_root, endpoint.url, endpoint.model) as cache:
            second, records_2 = run(endpoint, chat_items(20), tmp_path / "run2", cache=cache)
        assert url.stats()["total"] == 20
        assert (second.requests_sent, second.cache_hits) == (0, 20)
        assert essence(records_2) == essence(records_1)

        # The same server and model behind another URL is another service: nothing is shared.
        other = Endpoint(url=url.chat_url.replace("127.0.0.1", "localhost"), model="mock", num_concurrent=4)
        with ResponseCache(cache_root, other.url, other.model) as cache:
            third, _ = run(other, chat_items(20), tmp_path / "run3", cache=cache)
        assert third.requests_sent == 20 and third.cache_hits == 0
        assert url.stats()["total"] == 40


def test_cache_keys_on_the_full_request(tmp_path):
    with serve_in_thread() as url:
        endpoint = chat_endpoint(url, gen_fields={"temperature": 0.0})
        with ResponseCache(tmp_path / "cache", endpoint.url, endpoint.model) as cache:
            run(endpoint, chat_items(5), tmp_path / "a", cache=cache)
            hotter = chat_endpoint(url, gen_fields={"temperature": 0.7})
            summary, _ = run(hotter, chat_items(5), tmp_path / "b", cache=cache)
    assert summary.requests_sent == 5 and summary.cache_hits == 0


def test_failed_replies_are_not_cached(tmp_path):
    with serve_in_thread(faults=FaultPlan({"500": 1.0})) as url:
        endpoint = chat_endpoint(url, num_retry=2)
        summary, _ = run(endpoint, chat_items(3), tmp_path, cache=True)
    assert summary.failed == 3
    with ResponseCache(tmp_path / "cache", endpoint.url, endpoint.model) as cache:
        assert len(cache) == 0


# -- journal and resume ----------------------------------------------------------------------------------

def test_resume_sends_nothing_for_journaled_samples(tmp_path):
    journal_path = tmp_path / "journal.jsonl"
    with serve_in_thread() as url:
        endpoint = chat_endpoint(url)
        with Journal(journal_path) as journal:
            run(endpoint, chat_items(15), tmp_path, journal=journal)
        with Journal(journal_path) as journal:
            summary, records = run(endpoint, chat_items(40), tmp_path, journal=journal)
        by_key = url.stats()["by_key"]
    assert summary.skipped_from_journal == 15 and summary.done == 40 and summary.requests_sent == 25
    assert set(by_key.values()) == {1} and len(by_key) == 40
    assert [r.index for r in records] == list(range(40))


def test_failed_samples_are_tried_again_on_resume(tmp_path):
    journal_path = tmp_path / "journal.jsonl"
    with serve_in_thread(faults=FaultPlan({"500": 1.0})) as url, Journal(journal_path) as journal:
        first, _ = run(chat_endpoint(url, num_retry=1), chat_items(5), tmp_path, journal=journal)
    assert first.failed == 5
    with serve_in_thread() as url, Journal(journal_path) as journal:
        assert journal.finished_ids() == set() and len(journal.failed_ids()) == 5
        second, records = run(chat_endpoint(url), chat_items(5), tmp_path, journal=journal)
    assert second.requests_sent == 5 and second.done == 5
    assert all(r.error is None for r in records)


def test_journal_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append(SampleRecord(id="a", index=0, scores={"x": 1.0}))
        journal.append(SampleRecord(id="b", index=1, error="boom"))
        journal.append(SampleRecord(id="c", index=2))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id":"d","index":3,"pro')
    with Journal(path) as journal:
        assert journal.torn_bytes_dropped == len(b'{"id":"d","index":3,"pro')
        assert journal.finished_ids() == {"a", "c"}
        assert path.read_bytes() == whole
        journal.append(SampleRecord(id="b", index=1))
        assert journal.finished_ids() == {"a", "b", "c"}
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    with Journal(path) as journal:
        assert [r.id for r in journal.records()] == ["a", "b", "c"]
        assert journal.latest()["b"].error is None


def test_journal_fsyncs_off_the_event_loop(tmp_path, monkeypatch):
    """Appended from a running loop, every fsync_every records are synced on a thread: workers never wait for the disk.
    Without a loop (a plain caller), the sync is the caller's."""
    import os
    import threading

    synced_on: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced_on.append(threading.current_thread().name), real_fsync(fd))[1])
    loop_thread = threading.current_thread().name

    async def append_many() -> None:
        journal = Journal(tmp_path / "async.jsonl", fsync_every=10, fsync_interval=3600)
        for i in range(25):
            journal.append(SampleRecord(id=str(i), index=i))
        assert synced_on == []  # nothing synced on the loop's thread while appending
        for _ in range(200):  # the thread's fsync, bounded
            if synced_on:
                break
            await asyncio.sleep(0.01)
        assert synced_on and loop_thread not in synced_on
        journal.close()

    asyncio.run(append_many())
    synced_on.clear()
    with Journal(tmp_path / "plain.jsonl", fsync_every=10, fsync_interval=3600) as journal:
        for i in range(10):
            journal.append(SampleRecord(id=str(i), index=i))
        assert synced_on == [loop_thread]


def test_cancellation_flushes_the_journal(tmp_path):
    path = tmp_path / "journal.jsonl"
    with serve_in_thread(latency=0.02) as url:
        endpoint = chat_endpoint(url, num_concurrent=4)

        async def cancel_midway() -> None:
            journal = Journal(path, fsync_every=10_000, fsync_interval=3600)
            task = asyncio.ensure_future(run_dataset(endpoint, chat_items(1000), echo_score, journal, None,
                                                     dataset="t", total=1000, retry_policy=FAST))
            # Cancel once some samples are journaled, however slow the machine (bounded: the run ends by itself).
            while len(journal) <= 10 and not task.done():
                await asyncio.sleep(0.01)
            assert not task.done(), "the run finished before it could be cancelled"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert journal._unsynced == 0
            journal.close()

        asyncio.run(cancel_midway())
        sent = url.stats()["total"]
    with Journal(path) as journal:
        done = journal.finished_ids()
    assert 10 < len(done) < 1000
    assert sent - len(done) <= 4  # at most the requests in flight at the cancel were not journaled


# -- bounded pool, progress ---------------------------------------------------------------------------------

def test_the_pool_pulls_items_lazily(tmp_path):
    pulled = 0
    ahead = []

    def items():
        nonlocal pulled
        for item in chat_items(300):
            pulled += 1
            yield item

    scored = 0

    def score(item, replies):
        nonlocal scored
        ahead.append(pulled - scored)
        scored += 1
        return echo_score(item, replies)

    with serve_in_thread(latency=0.002) as url:
        summary, _ = run(chat_endpoint(url, num_concurrent=8), items(), tmp_path, score=score, total=300)
    assert summary.done == 300
    assert max(ahead) <= 8  # never more items out of the iterator than workers


def test_the_pool_pulls_lazily_when_batching(tmp_path):
    pulled, scored, ahead = 0, 0, []

    def items():
        nonlocal pulled
        for item in completion_items(200):
            pulled += 1
            yield item

    def score(item, replies):
        nonlocal scored
        ahead.append(pulled - scored)
        scored += 1
        return echo_score(item, replies)

    with serve_in_thread() as url:
        endpoint = Endpoint(url=url.completions_url, model="mock", num_concurrent=4, batch_size=5)
        summary, _ = run(endpoint, items(), tmp_path, score=score, total=200)
    assert summary.done == 200 and max(ahead) <= 4 * 5


def test_progress_events(tmp_path):
    events = []
    with serve_in_thread(latency=0.01) as url:
        started = time.monotonic()
        run(chat_endpoint(url, num_concurrent=2), chat_items(60), tmp_path,
            on_progress=lambda p: events.append((time.monotonic() - started, p)), progress_interval=0.05)
    assert events[-1][1].done == 60 and events[-1][1].total == 60 and events[-1][1].failed == 0
    assert len(events) >= 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events[:-1])]
    assert all(gap >= 0.04 for gap in gaps)
    assert all(a[1].done <= b[1].done for a, b in itertools.pairwise(events))
    assert any(p.rate > 0 for _, p in events)


def test_a_scoring_error_fails_only_its_sample(tmp_path):
    def score(item, replies):
        if item.index == 2:
            raise KeyError("target")
        return echo_score(item, replies)

    with serve_in_thread() as url:
        summary, records = run(chat_endpoint(url), chat_items(5), tmp_path, score=score)
    assert summary.failed == 1 and records[2].error == "scoring failed: KeyError: 'target'"


def test_a_given_httpx_client_carries_the_requests(tmp_path):
    import httpx

    sent = []

    async def count(request):
        sent.append(request.url)

    async def with_client():
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as client:
            with Journal(tmp_path / "journal.jsonl") as journal:
                return await run_dataset(chat_endpoint(url, num_concurrent=2), list(chat_items(6)), echo_score,
                                         journal, None, dataset="t", total=6, client=client, retry_policy=FAST)

    with serve_in_thread(faults=FirstAttemptFails(kind="reset")) as url:
        summary = asyncio.run(with_client())
    assert summary.done == 6 and summary.requests_sent == len(sent) == 12


def test_requests_go_through_httpx_when_a_proxy_applies(monkeypatch):
    from flageval.engine.transport import HttpxTransport, LeanTransport, build_transport

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert isinstance(build_transport("http://model.example/v1/completions", 2, 10), HttpxTransport)
    assert isinstance(build_transport("http://127.0.0.1:9/v1/completions", 2, 10), LeanTransport)
