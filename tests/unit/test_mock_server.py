"""The reference model server: routes, counting, faults, latency, its command line; and a killed engine run."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from flageval.engine import Journal
from flageval.mock_model.server import (
    DEFAULT_FAULT_KINDS,
    REPHRASED_OPENING,
    EchoAnswerer,
    FaultPlan,
    count_tokens,
    main,
    parse_fault_rates,
    serve_in_subprocess,
    serve_in_thread,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "q1"}]}


def test_routes_and_stats():
    with serve_in_thread(served_model="served") as url:
        models = httpx.get(f"{url}/v1/models").json()
        assert models["data"][0]["id"] == "served"
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        ok = httpx.post(url.chat_url, json={**CHAT, "model": "served"})
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"] == {"role": "assistant", "content": "q1"}
        wrong_model = httpx.post(url.chat_url, json=CHAT)
        assert wrong_model.status_code == 404 and "does not exist" in wrong_model.json()["error"]["message"]
        assert httpx.post(url.chat_url, content=b"{nope").status_code == 400
        assert httpx.get(url.chat_url).status_code == 405
        assert httpx.get(f"{url}/nowhere").status_code == 404
        stats = httpx.get(f"{url}/stats").json()
        assert stats["total"] == 3 and stats["by_key"] == {"q1": 1}
        assert httpx.post(f"{url}/stats/reset").status_code == 200
        assert httpx.get(f"{url}/stats").json()["total"] == 0


def test_api_key_is_checked():
    with serve_in_thread(api_key="secret") as url:
        assert httpx.post(url.chat_url, json=CHAT).status_code == 401
        ok = httpx.post(url.chat_url, json=CHAT, headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200


def test_completions_batch_and_echo_logprobs():
    with serve_in_thread() as url:
        batch = httpx.post(url.completions_url, json={"model": "m", "prompt": ["a b", "c"], "max_tokens": 4}).json()
        assert [(c["index"], c["text"]) for c in batch["choices"]] == [(0, " re:a b"), (1, " re:c")]
        scored = httpx.post(url.completions_url, json={"model": "m", "prompt": "one two three", "echo": True,
                                                       "logprobs": 1, "max_tokens": 0}).json()["choices"][0]
        logprobs = scored["logprobs"]
        assert scored["text"] == "one two three"
        assert logprobs["tokens"] == ["one", " two", " three"] and logprobs["text_offset"] == [0, 3, 7]
        assert logprobs["token_logprobs"][0] is None
        assert url.stats()["by_key"] == {"a b": 1, "c": 1, "one two three": 1}


def test_fault_plan_is_deterministic_and_keeps_its_rates():
    plan = FaultPlan(parse_fault_rates("0.3"), seed=11)
    picks = [plan.pick(f"q{i}", n) for i in range(3000) for n in range(2)]
    assert picks == [FaultPlan(parse_fault_rates("0.3"), seed=11).pick(f"q{i}", n) for i in range(3000) for n in range(2)]
    assert picks != [FaultPlan(parse_fault_rates("0.3"), seed=12).pick(f"q{i}", n) for i in range(3000) for n in range(2)]
    assert 0.27 < sum(p is not None for p in picks) / len(picks) < 0.33
    assert {p for p in picks if p} == set(DEFAULT_FAULT_KINDS)


def test_fault_rate_forms():
    assert parse_fault_rates("503=0.1, reset=0.05") == {"503": 0.1, "reset": 0.05}
    assert parse_fault_rates("0.4", ["503", "stall"]) == {"503": 0.2, "stall": 0.2}
    assert parse_fault_rates("") == {}
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultPlan({"teapot": 0.1})
    with pytest.raises(ValueError, match="at most 1"):
        FaultPlan({"503": 0.7, "500": 0.7})
    with pytest.raises(ValueError, match="not kind=rate"):
        parse_fault_rates("503:0.1")


@pytest.mark.parametrize("kind", ["503", "429", "500", "bad_json", "reset"])
def test_each_fault_looks_like_itself(kind):
    with serve_in_thread(faults=FaultPlan({kind: 1.0}, retry_after=7)) as url:
        if kind == "reset":
            with pytest.raises(httpx.TransportError):
                httpx.post(url.chat_url, json=CHAT)
            return
        response = httpx.post(url.chat_url, json=CHAT)
    if kind == "bad_json":
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()
    else:
        assert response.status_code == int(kind)
        assert response.headers.get("retry-after") == ("7" if kind in ("503", "429") else None)


def test_stall_outlasts_the_client_timeout():
    with serve_in_thread(faults=FaultPlan({"stall": 1.0}, stall_seconds=30)) as url:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url.chat_url, json=CHAT, timeout=0.3)
        assert time.monotonic() - started < 2


def test_latency_applies_to_each_request_concurrently():
    import asyncio

    async def ten(url: str) -> float:
        started = time.monotonic()
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(client.post(url, json=CHAT) for _ in range(10)))
        return time.monotonic() - started

    with serve_in_thread(latency=0.3) as url:
        elapsed = asyncio.run(ten(url.chat_url))
    assert 0.3 <= elapsed < 2.0  # one after the other would take 3 s


def test_pipelined_requests_are_answered_in_order():
    with serve_in_thread(latency=0.01) as url:
        port = int(url.rsplit(":", 1)[1])
        requests = b""
        for i in range(3):
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"p{i}"}]}).encode()
            requests += (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                         + body)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(requests)
            received = b""
            sock.settimeout(5)
            while received.count(b"chat.completion") < 3:
                received += sock.recv(65536)
    order = [received.find(f'"content":"p{i}"'.encode()) for i in range(3)]
    assert -1 not in order and order == sorted(order)


def _exchange(port: int, reads: list[bytes]) -> bytes:
    """Send `reads` one by one, then read everything the server sends until it closes the connection.

    The server closes after the last read of each call: a read sent after its close would be reset."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        for data in reads:
            sock.sendall(data)
            time.sleep(0.01)  # separate reads on the server's side
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_request_parsing_edges():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "chunked"}]}).encode()
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
    upgrade_get = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    upgrade_post = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with serve_in_thread() as url:
        port = int(url.rsplit(":", 1)[1])
        # a chunked body in pieces that split its framing; then, on the same connection, an Upgrade request
        answer = _exchange(port, [chunked[:60], chunked[60:75], chunked[75:],
                                  upgrade_get + b"GET /health HTTP/1.1\r\n\r\n"])
        assert answer.startswith(b"HTTP/1.1 200 OK") and b'"content":"chunked"' in answer
        # the Upgrade is ignored (RFC 9110 allows it): answered as plain HTTP, then closed, the rest unread
        assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b'{"status":"ok"}')
        assert _exchange(port, [upgrade_post]).startswith(b"HTTP/1.1 400 ")
        malformed = _exchange(port, [b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n"])
        assert malformed.startswith(b"HTTP/1.1 400 ") and b"malformed request" in malformed
        too_long = _exchange(port, [b"GET /health HTTP/1.1\r\n"] + [b"X-Filler: " + b"x" * 8000 + b"\r\n"] * 9)
        assert too_long.startswith(b"HTTP/1.1 413 ") and b"head too large" in too_long
        too_big = _exchange(port, [b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n{"])
        assert too_big.startswith(b"HTTP/1.1 413 ") and b"body too large" in too_big
        assert url.stats()["by_path"] == {"/v1/chat/completions": 1, "/health": 1}  # only the Upgrade one


def test_echo_answerer_keys_long_questions_by_hash():
    answerer = EchoAnswerer()
    key, content = answerer.chat([{"role": "user", "content": "x" * 100}], {})
    assert key.startswith("sha1:") and content == "x" * 100


def test_command_line_serves_in_its_own_process():
    with serve_in_subprocess(["--answerer", "echo", "--model", "mock", "--latency", "0.001"]) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "mock"}).json()
        assert answer["choices"][0]["message"]["content"] == "q1"


@pytest.mark.parametrize("argv, message", [
    (["--answerer", "echo", "--fault-rate", "teapot=0.1"], "unknown fault kind"),
    (["--answerer", "echo", "--fault-rate", "503=0.7,500=0.7"], "at most 1"),
])
def test_command_line_rejects_bad_options_in_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_benchmark_answers_need_data(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FLAGEVAL_DATA_DIR", str(tmp_path / "absent"))  # where the evaluator would look too
    assert main(["--answerer", "benchmarks"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and "--data-dir" in err


# -- a run killed with SIGKILL and started again --------------------------------------------------------------

RUN_SCRIPT = """
import asyncio, sys
from flageval.engine import Endpoint, Journal, run_dataset
from support.engine_helpers import FAST, chat_items, echo_score
url, journal_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
journal = Journal(journal_path)
endpoint = Endpoint(url=url + "/v1/chat/completions", model="mock", num_concurrent=4)
summary = asyncio.run(run_dataset(endpoint, chat_items(n), echo_score, journal, None, dataset="t", total=n,
                                  retry_policy=FAST))
journal.close()
print(summary.done, summary.failed)
"""


def finished_count(journal_path: Path) -> int:
    if not journal_path.exists():
        return 0
    return sum(1 for line in journal_path.read_bytes().splitlines() if b'"error":null' in line)


def test_sigkill_and_restart_resends_nothing_journaled(tmp_path):
    n = 300
    journal_path = tmp_path / "journal.jsonl"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "operator"), str(root / "tests")]))
    command = [sys.executable, "-c", RUN_SCRIPT]
    rng = random.Random(5)
    journaled_before_kill: list[set[str]] = []
    counts_at_kill: list[dict[str, int]] = []
    with serve_in_subprocess(["--answerer", "echo", "--latency", "0.01"]) as url:
        for _ in range(5):
            process = subprocess.Popen([*command, url, str(journal_path), str(n)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # Kill once this run has journaled something (start-up time varies), at a random point after.
            before = len(journaled_before_kill[-1]) if journaled_before_kill else 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and finished_count(journal_path) <= before:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.15))
            process.send_signal(signal.SIGKILL)
            process.wait()
            with Journal(journal_path) as journal:
                journaled_before_kill.append(journal.finished_ids())
            time.sleep(0.1)  # requests the killed process had already written reach the server
            counts_at_kill.append(httpx.get(f"{url}/stats").json()["by_key"])
        done = subprocess.run([*command, url, str(journal_path), str(n)], env=env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
        by_key = httpx.get(f"{url}/stats").json()["by_key"]

    assert done.stdout.split() == [str(n), "0"]
    sizes = [len(ids) for ids in journaled_before_kill]
    assert sizes == sorted(sizes) and 0 < sizes[0] and sizes[-1] < n
    for ids, counts in zip(journaled_before_kill, counts_at_kill):
        keys = [f"q{sample_id.split('/')[1]}" for sample_id in ids]
        assert [by_key[key] for key in keys] == [counts[key] for key in keys]  # nothing sent after the kill
    assert len(by_key) == n
    # Only the few requests in flight at each kill were sent twice.
    assert sum(by_key.values()) - n <= 5 * 4
    with Journal(journal_path) as journal:
        records = journal.records()
    assert [r.index for r in records] == list(range(n)) and all(r.scores["exact_match"] == 1.0 for r in records)


def test_a_large_body_that_ends_in_a_large_read_is_answered():
    with serve_in_thread() as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(2):  # twice on one connection
                sock.sendall(head + body[:1000])
                time.sleep(0.2)
                sock.sendall(body[1000:])  # the read that completes the message is far over the 64 KB head bound
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                length = int(answer.split(b"content-length: ")[1].split(b"\r\n")[0])
                rest = answer.split(b"\r\n\r\n", 1)[1]
                while len(rest) < length:
                    rest += sock.recv(65536)


def test_truncation_rephrasing_and_usage_are_per_question_and_counted():
    questions = [f"question number {i} asks something long enough to cut in half" for i in range(200)]

    def ask(url, text):
        return httpx.post(url.chat_url, json={"model": "m", "messages": [{"role": "user", "content": text}]}).json()

    with serve_in_thread(truncate_rate=0.1, rephrase_rate=0.2, seed=4) as url:
        first = [ask(url, q) for q in questions]
        again = [ask(url, q) for q in questions]
        stats = url.stats()
    cut = [a["choices"][0]["finish_reason"] == "length" for a in first]
    assert cut == [a["choices"][0]["finish_reason"] == "length" for a in again]  # the same questions every time
    assert stats["truncated"] == 2 * sum(cut) and 5 <= sum(cut) <= 40
    assert stats["rephrased"] == 2 * sum(a["choices"][0]["message"]["content"].startswith(REPHRASED_OPENING) for a in first)
    for answer, question, was_cut in zip(first, questions, cut):
        content = answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] == count_tokens(content)
        assert (len(content) < len(question)) is was_cut
    with serve_in_thread(usage=False) as url:
        assert "usage" not in ask(url, questions[0])
