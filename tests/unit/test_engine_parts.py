"""Engine pieces on their own: reply parsing, Retry-After, backoff, the cache's files, the HTTP transport."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable

import pytest
from flageval.engine import (
    Endpoint,
    ResponseCache,
    RetryPolicy,
    cache_key,
    split_thinking,
)
from flageval.engine.cache import cache_dir_name
from flageval.engine.client import (
    EndpointClient,
    MalformedResponse,
    canonical_json,
    chat_choice,
    completion_choices,
    parse_retry_after,
)
from flageval.engine.transport import (
    LeanTransport,
    RawResponse,
    TransportError,
    TransportTimeout,
    _Connection,
)

# -- thinking ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, text, reasoning", [
    ("The answer is 4.", "The answer is 4.", None),
    ("<think>2+2=4</think>\n\nThe answer is 4.", "The answer is 4.", "2+2=4"),
    ("2+2 is 4, I am sure.\n</think>\n\nThe answer is 4.", "The answer is 4.", "2+2 is 4, I am sure."),
    ("<think>a</think>x<think>b</think>y", "xy", "a\nb"),
    ("Answer first <think>then thinking that never ends", "Answer first", "then thinking that never ends"),
    ("<think>\n</think>\n\n#### 7", "#### 7", None),
])
def test_split_thinking(content, text, reasoning):
    assert split_thinking(content) == (text, reasoning)


def test_chat_reply_merges_reasoning_fields_and_inline_thinking():
    data = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "<think>inline</think>42", "reasoning_content": "field"}}]}
    _, reply = chat_choice(data)
    assert (reply.text, reply.reasoning, reply.finish_reason) == ("42", "field\ninline", "stop")
    _, reply = chat_choice({"choices": [{"message": {"content": None, "reasoning": "all thought"}}]})
    assert (reply.text, reply.reasoning) == ("", "all thought")


@pytest.mark.parametrize("data", [{}, {"choices": []}, {"choices": [{"text": "x"}]}, [], "x",
                                  {"choices": [{"message": {"content": 5}}]}])
def test_malformed_chat_answers(data):
    with pytest.raises(MalformedResponse):
        chat_choice(data)


def test_completion_choices_are_mapped_by_index():
    choices = [{"index": 2, "text": "c"}, {"index": 0, "text": "a", "logprobs": {"tokens": ["a"]}},
               {"index": 1, "text": "b"}]
    ordered = completion_choices({"choices": choices}, 3)
    assert [c["text"] for c in ordered] == ["a", "b", "c"]
    with pytest.raises(MalformedResponse, match="1 of 3 prompts got no choice"):
        completion_choices({"choices": choices[:2]}, 3)
    with pytest.raises(MalformedResponse, match="index 5"):
        completion_choices({"choices": [{"index": 5, "text": "x"}]}, 3)


# -- what is sent -----------------------------------------------------------------------------------------

def test_full_body_for_completions_keeps_scoring_requests_plain():
    endpoint = Endpoint(url="http://h/v1/completions", model="m", gen_fields={"temperature": 0.6, "top_k": 20},
                        thinking=True)
    client = EndpointClient(endpoint, transport=None, policy=RetryPolicy())  # type: ignore[arg-type]
    generate = client.full_body({"prompt": "Q", "max_tokens": 5})
    assert generate == {"prompt": "Q", "max_tokens": 5, "model": "m", "temperature": 0.6, "top_k": 20}
    score = client.full_body({"prompt": "Q A", "echo": True, "logprobs": 1, "max_tokens": 0})
    assert score == {"prompt": "Q A", "echo": True, "logprobs": 1, "max_tokens": 0, "model": "m"}


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": {"y": 2, "x": "é"}}) == canonical_json({"a": {"x": "é", "y": 2}, "b": 1})
    assert canonical_json({"a": "é", "n": [1, 0.5, None, True]}) == '{"a":"é","n":[1,0.5,null,true]}'.encode()


# -- waiting --------------------------------------------------------------------------------------------

def test_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_is_full_jitter_under_a_cap():
    policy = RetryPolicy(base_delay=0.5, max_delay=30)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (7, 30.0), (60, 30.0), (1000, 30.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2


# -- cache files --------------------------------------------------------------------------------------------

def test_cache_writers_share_a_directory_without_sharing_files(tmp_path):
    url, model = "http://a:9010/v1/chat/completions", "Qwen3-8B"
    body_1, body_2 = canonical_json({"model": model, "n": 1}), canonical_json({"model": model, "n": 2})
    first, second = ResponseCache(tmp_path, url, model), ResponseCache(tmp_path, url, model)
    first.put(first.key(body_1), {"message": {"content": "one"}})
    second.put(second.key(body_2), {"message": {"content": "two"}})
    assert len(list(first.dir.glob("*.jsonl"))) == 2
    # Each sees what it wrote; a reader opened later sees both once their index lines are out.
    assert first.get(first.key(body_2)) is None
    first.flush_index()
    second.flush_index()
    reader = ResponseCache(tmp_path, url, model)
    assert reader.get(reader.key(body_1)) == {"message": {"content": "one"}}
    assert reader.get(reader.key(body_2)) == {"message": {"content": "two"}}
    for cache in (first, second, reader):
        cache.close()


def test_cache_ignores_unfinished_writes(tmp_path):
    url, model = "http://a/v1/completions", "m"
    with ResponseCache(tmp_path, url, model) as cache:
        key = cache.key(b"{}")
        cache.put(key, {"text": "ok"})
        index = next(cache.dir.glob("*.idx"))
        data = index.with_suffix(".jsonl")
    lost = cache_key(url, model, b'{"lost":1}')
    # An index line whose data never made it, and a half-written index line.
    with open(index, "a") as handle:
        handle.write(f"{lost} {data.stat().st_size} 100\n")
        handle.write(f"{cache_key(url, model, b'[]')} 0")
    with ResponseCache(tmp_path, url, model) as cache:
        assert cache.get(key) == {"text": "ok"}
        assert cache.get(lost) is None
        assert len(cache) == 2


def test_cache_directory_per_service_and_model():
    names = {cache_dir_name(u, m) for u in ("http://a/v1/chat/completions", "http://b/v1/chat/completions")
             for m in ("Qwen3-8B", "Qwen3-32B")}
    assert len(names) == 4
    assert cache_dir_name("http://a/v1/x/", "Qwen/Qwen3-8B").startswith("Qwen_Qwen3-8B-")
    assert cache_key("http://a/x", "m", b"{}") != cache_key("http://b/x", "m", b"{}")
    assert cache_key("http://a/x", "m", b"{}") != cache_key("http://a/x", "n", b"{}")


# -- the HTTP transport against hand-written responses -----------------------------------------------------

Responder = Callable[[bytes], list[bytes | None]]  # request bytes → chunks to write; None = close


async def _with_server(respond: Responder, test) -> tuple[int, object]:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                for chunk in respond(body):
                    if chunk is None:
                        writer.close()
                        return
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.001)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await test(LeanTransport(f"http://127.0.0.1:{port}/v1/completions", 4))
    finally:
        server.close()
    return connections, result


def _serve(respond: Responder, payloads: list[bytes], timeout: float = 2.0):
    async def test(transport: LeanTransport):
        results = []
        for payload in payloads:
            try:
                results.append(await transport.post(payload, {"content-type": "application/json"}, timeout))
            except TransportError as error:
                results.append(error)
        await transport.aclose()
        return results

    return asyncio.run(_with_server(respond, test))


def test_transport_reuses_one_connection():
    def respond(body: bytes):
        answer = json.dumps({"echo": body.decode()}).encode()
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer]

    connections, results = _serve(respond, [b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    assert connections == 1
    assert [json.loads(r.content)["echo"] for r in results] == ['{"n":1}', '{"n":2}', '{"n":3}']


def test_transport_reads_chunked_bodies_in_pieces():
    def respond(body: bytes):
        return [b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: 1\r\n\r\n5\r\nhel",
                b"lo\r\n6;ext=1\r\n world\r\n", b"0\r\n", b"\r\n"]

    connections, results = _serve(respond, [b"{}", b"{}"])
    assert [r.content for r in results] == [b"hello world", b"hello world"]
    assert results[0].status == 200 and results[0].headers["x-test"] == "1"
    assert connections == 1


def test_transport_reads_bodies_ended_by_close():
    def respond(body: bytes):
        return [b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 2\r\n\r\nbusy", None]

    connections, results = _serve(respond, [b"{}", b"{}"])
    assert [(r.status, r.content, r.headers["retry-after"]) for r in results] == [(503, b"busy", "2")] * 2
    assert connections == 2


def test_transport_reports_a_connection_closed_mid_answer():
    def respond(body: bytes):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial", None]

    _, results = _serve(respond, [b"{}"])
    assert isinstance(results[0], TransportError) and "mid-answer" in str(results[0])


def test_transport_times_out_and_recovers():
    calls = []

    def respond(body: bytes):
        calls.append(body)
        if len(calls) == 1:
            return []  # never answers
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    connections, results = _serve(respond, [b"{}", b"{}"], timeout=0.2)
    assert isinstance(results[0], TransportTimeout)
    assert results[1].content == b"ok"
    assert connections == 2  # the timed-out connection is not reused


def test_transport_refused_connection():
    async def test():
        transport = LeanTransport("http://127.0.0.1:9/v1/completions", 1)
        with pytest.raises(TransportError, match="Connect"):
            await transport.post(b"{}", {}, 1.0)

    asyncio.run(test())


def test_cache_key_method_matches_the_function(tmp_path):
    with ResponseCache(tmp_path, "http://a/v1/completions/", "m") as cache:
        assert cache.key(b'{"x":1}') == cache_key("http://a/v1/completions", "m", b'{"x":1}')


def test_transport_does_not_reuse_a_connection_left_idle(monkeypatch):
    import flageval.engine.transport as transport_module

    monkeypatch.setattr(transport_module, "IDLE_REUSE_SECONDS", 0.05)

    def respond(body: bytes):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    async def test(transport: LeanTransport):
        first = await transport.post(b"{}", {}, 2)
        await asyncio.sleep(0.1)  # longer than the reuse limit: the second request opens a new connection
        second = await transport.post(b"{}", {}, 2)
        third = await transport.post(b"{}", {}, 2)
        await transport.aclose()
        return [first.content, second.content, third.content]

    connections, results = asyncio.run(_with_server(respond, test))
    assert results == [b"ok"] * 3 and connections == 2


# -- the transport's parsing, one read at a time ----------------------------------------------------------

class _Wire(asyncio.Transport):
    """The socket side of a transport connection: records what is written and whether it was dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return default


def _answer(reads: list[bytes | None]) -> tuple[object, _Connection, _Wire]:
    """Feed `reads` (None = the server closes) to a connection that sent one request: its answer or error."""
    async def go():
        connection = _Connection()
        wire = _Wire()
        connection.connection_made(wire)
        waiter = connection.send(b"POST / HTTP/1.1\r\n\r\n")
        for read in reads:
            if read is None:
                connection.connection_lost(None)
            else:
                connection.data_received(read)
            if connection.closed:
                break
        if not waiter.done():
            return "pending", connection, wire
        return (waiter.exception() or waiter.result()), connection, wire

    return asyncio.run(go())


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


@pytest.mark.parametrize("answer, body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test:  a b \r\n\r\nhello world", b"hello world"),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: a b\r\n\r\n"
     b"5\r\nhello\r\nA;ext=1\r\n world 123\r\n0\r\nX-Trailer: t\r\n\r\n"), b"hello world 123"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Test: a b\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 204 No Content\r\nX-Test: a b\r\n\r\n", b""),
])
def test_transport_parses_answers_split_at_every_byte(answer, body):
    result, connection, wire = _answer(_bytewise(answer))
    assert isinstance(result, RawResponse), result
    assert (result.content, result.headers["x-test"]) == (body, "a b")
    assert connection.reusable and not wire.aborted  # the connection goes back to the pool


def test_transport_reads_a_body_that_ends_with_the_connection():
    result, connection, _ = _answer([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhel", b"lo", None])
    assert isinstance(result, RawResponse) and (result.status, result.content) == (200, b"hello")
    assert not connection.reusable


def test_transport_drops_a_connection_the_server_said_it_closes():
    result, connection, wire = _answer([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"])
    assert isinstance(result, RawResponse) and result.content == b"ok"
    assert connection.closed and wire.aborted


@pytest.mark.parametrize("extra", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"garbage"])
def test_transport_answers_then_drops_a_connection_with_bytes_left_over(extra):
    result, connection, wire = _answer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + extra])
    assert isinstance(result, RawResponse) and result.content == b"ok"
    assert connection.closed and wire.aborted  # out of step: the next answer would belong to no request


def test_transport_refuses_an_oversized_head():
    reads = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Filler: " + b"x" * 8000 + b"\r\n"] * 9
    result, _, wire = _answer(reads)
    assert isinstance(result, TransportError) and "head larger than" in str(result)
    assert wire.aborted


@pytest.mark.parametrize("answer, message", [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "Expected HTTP/"),
    (b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok", "status"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
])
def test_transport_reports_a_malformed_answer(answer, message):
    result, _, wire = _answer([answer])
    assert isinstance(result, TransportError) and not isinstance(result, TransportTimeout)
    assert "not a valid HTTP/1.1 answer" in str(result) and message.lower() in str(result).lower()
    assert wire.aborted


def test_a_malformed_answer_is_retried():
    answers = [b"HTTP/1.1 OK 200\r\n\r\n", b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}']

    def respond(body: bytes):
        return [answers.pop(0)]

    async def test(transport: LeanTransport):
        endpoint = Endpoint(url="http://127.0.0.1/v1/completions", model="m", num_retry=3)
        client = EndpointClient(endpoint, transport, RetryPolicy(base_delay=0.001, max_delay=0.01))
        answer = await client.post(b"{}", time.monotonic() + 10, lambda data: data)
        await transport.aclose()
        return answer, client.requests_sent, client.last_error

    connections, (answer, sent, last_error) = asyncio.run(_with_server(respond, test))
    assert (answer, sent, connections) == ({}, 2, 2)
    assert "not a valid HTTP/1.1 answer" in last_error


@pytest.mark.parametrize("url, kind", [
    ("http://h:9010/v1/chat/completions", "chat"),
    ("http://h/v1/chat/completions/", "chat"),
    ("https://h/openai/deployments/x/chat/completions?api-version=2024-06-01", "chat"),
    ("http://h:9010/v1/completions", "completions"),
])
def test_endpoint_kind(url, kind):
    assert Endpoint(url=url, model="m").kind == kind
