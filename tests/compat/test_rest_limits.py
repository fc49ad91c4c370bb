"""`flageval serve` against clients that ask too often or send too slowly, on a real server process."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from shim_process import launch_shim


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def read_until_closed(sock: socket.socket, limit: float = 60) -> bytes:
    """Everything the server sends until it closes the connection (bounded: fails after `limit` seconds)."""
    sock.settimeout(limit)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture(scope="module")
def slow_limits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    shim = launch_shim(tmp / "state", tmp / "serve.log", "--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1")
    yield shim
    shim.stop()


def test_a_client_over_the_rate_gets_429_with_the_envelope(tmp_path):
    shim = launch_shim(tmp_path / "state", tmp_path / "serve.log", "--rate-limit", "1", "--rate-burst", "3")
    try:
        with httpx.Client(base_url=shim.url, timeout=10) as client:
            answers = []
            for _ in range(50):  # at one request a second, 50 cannot all be let through unless each took a second
                answer = client.post("/evaluation_progress", json={"request_id": "eval-unknown"})
                answers.append(answer)
                if answer.status_code == 429:
                    break
        refused = answers[-1]
        assert refused.status_code == 429, [a.status_code for a in answers]
        body = refused.json()
        assert body["err_code"] == 1 and "too many requests" in body["err_msg"] and body["err_msg"] == body["err_message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert all(a.status_code == 200 and a.json()["err_code"] == 1 for a in answers[:-1])  # unknown id: answered
        assert len(answers) >= 3  # the burst went through
    finally:
        shim.stop()
    assert "Traceback" not in shim.log()


def test_a_client_that_never_finishes_its_headers_is_disconnected(slow_limits):
    with socket.create_connection(address(slow_limits.url)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # and no blank line
        assert read_until_closed(slow) == b""
    # Others are served meanwhile and after.
    assert httpx.get(f"{slow_limits.url}/healthz", timeout=10).json()["status"] == "ok"


def test_a_body_that_does_not_arrive_gets_408_and_the_connection_closes(slow_limits):
    with socket.create_connection(address(slow_limits.url)) as slow:
        slow.sendall(b"POST /evaluation_progress HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"request_id\":")
        answer = read_until_closed(slow)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    envelope = json.loads(body)
    assert envelope["err_code"] == 1 and "did not arrive within 1 s" in envelope["err_msg"]


def test_an_idle_kept_alive_connection_is_closed(slow_limits):
    with socket.create_connection(address(slow_limits.url)) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = read_until_closed(idle)  # the answer, then the close once it has idled past the keep-alive timeout
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
