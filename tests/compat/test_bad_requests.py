"""Requests a client gets wrong — missing fields, wrong types, unknown names, unreadable or huge bodies,
no token — answer with the envelope (err_code 1 and the reason under both names) and never a 5xx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import httpx
import pytest
from flageval_client import eval_info
from shim_process import DATA, launch_shim

SECRET = f"sk-bad-{uuid.uuid4().hex}"
URL = "http://127.0.0.1:9/v1/chat/completions"  # the allowlist below refuses it before anything runs


def info(**fields):
    return {**eval_info("m-nvidia-origin", "m", URL, api_key=SECRET), **fields}


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    process = launch_shim(tmp / "state", tmp / "serve.log", "--allow-host", "models.invalid", "--max-body-bytes", "65536")
    yield process
    process.stop()


def envelope(response: httpx.Response) -> dict:
    assert response.status_code < 500, response.text
    body = response.json()
    assert body["err_code"] == 1 and body["err_msg"] == body["err_message"] and body["err_msg"], body
    assert SECRET not in response.text
    return body


CASES = [
    # (method, path, json body, expected HTTP status, words the message must contain)
    ("POST", "/evaluation", {}, 422, ["eval_infos", "required"]),
    ("POST", "/evaluation", {"eval_infos": [], "domain": "NLP"}, 422, ["eval_infos"]),
    ("POST", "/evaluation", {"eval_infos": "x", "domain": "NLP"}, 422, ["eval_infos"]),
    ("POST", "/evaluation", {"eval_infos": [{k: v for k, v in info().items() if k != "eval_url"}]}, 422, ["eval_url", "required"]),
    ("POST", "/evaluation", {"eval_infos": [{k: v for k, v in info().items() if k != "model"}]}, 422, ["model", "required"]),
    ("POST", "/evaluation", {"eval_infos": [info(num_concurrent="many")]}, 422, ["num_concurrent"]),
    ("POST", "/evaluation", {"eval_infos": [info(batch_size=0)]}, 422, ["batch_size"]),
    ("POST", "/evaluation", {"eval_infos": [info(thinking=[1])]}, 422, ["thinking"]),
    ("POST", "/evaluation", {"eval_infos": [info(eval_url="ftp://host/x")]}, 422, ["eval_url"]),
    ("POST", "/evaluation", {"eval_infos": [info(gen_kwargs="temperature")]}, 422, ["gen_kwargs"]),
    ("POST", "/evaluation", {"eval_infos": [info(chip="H100")]}, 422, ["chip"]),
    ("POST", "/evaluation", {"eval_infos": [info(eval_model="a/b")]}, 422, ["eval_model"]),
    ("POST", "/evaluation", {"eval_infos": [info(), info()]}, 422, ["unique"]),
    ("POST", "/evaluation", {"eval_infos": [info()], "domain": "CV"}, 422, ["domain"]),
    ("POST", "/evaluation", {"eval_infos": [info()], "domain": 3}, 422, ["domain"]),
    ("POST", "/evaluation", {"eval_infos": [info()], "region": "Bei Jing"}, 422, ["region"]),
    ("POST", "/evaluation", {"eval_infos": [info()], "mode": "everything"}, 200, ["mode", "everything"]),
    ("POST", "/evaluation", {"eval_infos": [info()]}, 200, ["127.0.0.1", "not allowed"]),
    ("POST", "/evaluation", [info()], 422, ["body"]),
    ("POST", "/evaluation", None, 422, ["body"]),
    ("POST", "/evaluation_progress", {}, 422, ["request_id"]),
    ("POST", "/evaluation_progress", {"request_id": 17}, 422, ["request_id"]),
    ("POST", "/evaluation_progress", {"request_id": ["a"]}, 422, ["request_id"]),
    ("POST", "/evaluation_progress", {"request_id": "eval-000000000000"}, 200, ["unknown", "eval-000000000000"]),
    ("POST", "/evaluation_progress", {"request_id": "../../etc/passwd"}, 200, ["unknown"]),
    ("POST", "/evaluation_progress", {"request_id": "eval-000000000000", "domain": "XX"}, 422, ["domain"]),
    ("POST", "/stop_evaluation", {"request_id": "eval-000000000000"}, 200, ["unknown"]),
    ("POST", "/stop_evaluation", {"request": "eval-000000000000"}, 422, ["request_id"]),
    ("POST", "/resume_evaluation", {"request_id": "eval-000000000000"}, 200, ["unknown"]),
    ("POST", "/resume_evaluation", {"request_id": None}, 422, ["request_id"]),
    ("GET", "/evaldiffs", {"request_id": "eval-000000000000"}, 200, ["unknown"]),
    ("GET", "/evaldiffs", None, 422, ["request_id"]),
    ("GET", "/evaldiffs", {"request_id": {"id": 1}}, 422, ["request_id"]),
    ("POST", "/evaluation_diffs", {"request_ids": []}, 422, ["request_ids"]),
    ("POST", "/evaluation_diffs", {"request_ids": "eval-000000000000"}, 422, ["request_ids"]),
    ("POST", "/evaluation_diffs", {"request_ids": ["eval-000000000000", "eval-111111111111"]}, 200, ["eval-000000000000", "eval-111111111111"]),
    ("GET", "/evaluation_diffs", None, 422, ["request_ids"]),
    ("PUT", "/evaluation", {"eval_infos": [info()]}, 405, ["PUT"]),
    ("POST", "/evaluations", {"eval_infos": [info()]}, 404, ["/evaluations"]),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), CASES, ids=[f"{c[0]} {c[1]} {json.dumps(c[2])[:40]}" for c in CASES])
def test_bad_request_answers_with_the_envelope(shim, method, path, body, status, words):
    response = httpx.request(method, shim.url + path, json=body, timeout=10)
    answer = envelope(response)
    assert response.status_code == status, answer
    for word in words:
        assert word.lower() in answer["err_msg"].lower(), answer


@pytest.mark.parametrize("raw", [b"{", b'{"request_id": "a",}', b"\xff\xfe", b"nul", b'{"request_id": "x"} trailing'])
def test_malformed_json_is_400(shim, raw):
    response = httpx.post(shim.url + "/evaluation_progress", content=raw, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert "JSON" in envelope(response)["err_msg"]


def test_huge_bodies_are_refused_with_the_envelope(shim):
    huge = json.dumps({"request_id": "x" * 100_000, "api_key": SECRET}).encode()
    response = httpx.post(shim.url + "/evaluation_progress", content=huge, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 413 and "65536 bytes" in envelope(response)["err_msg"]

    def chunks():  # no Content-Length: refused once the limit is crossed
        for _ in range(100):
            yield b" " * 4096
    response = httpx.post(shim.url + "/evaluation", content=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 413 and envelope(response)


def test_the_server_log_holds_no_key(shim):
    httpx.post(shim.url + "/evaluation", json={"eval_infos": [info(num_concurrent="x")]}, timeout=10)
    httpx.post(shim.url + "/evaluation", json={"eval_infos": [info()]}, timeout=10)
    assert SECRET not in shim.log()
    assert "Traceback" not in shim.log()


def test_token_is_required_when_configured(tmp_path):
    shim = launch_shim(tmp_path / "state", tmp_path / "serve.log", env={"FLAGEVAL_SHIM_TOKEN": "t0ken-for-tests"})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dDBrZW4="}):
            response = httpx.post(shim.url + "/evaluation_progress", json={"request_id": "eval-000000000000"}, headers=headers, timeout=10)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert "token" in envelope(response)["err_msg"]
        good = httpx.post(shim.url + "/evaluation_progress", json={"request_id": "eval-000000000000"},
                          headers={"Authorization": "Bearer t0ken-for-tests"}, timeout=10)
        assert good.status_code == 200 and "unknown" in good.json()["err_msg"]
        assert httpx.get(shim.url + "/healthz", timeout=10).status_code == 200  # probes need no token
    finally:
        shim.stop()
    assert "t0ken-for-tests" not in shim.log()


def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flageval.cli", "serve", "--data-dir", str(DATA), *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_no_token_means_loopback_only(tmp_path):
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        proc = serve("--host", host, "--port", "0", "--state-dir", str(tmp_path))
        assert proc.returncode == 2
        assert f"refusing to listen on {host} without a token" in proc.stderr


def test_one_server_per_state_directory(tmp_path):
    first = launch_shim(tmp_path / "state", tmp_path / "serve.log")
    try:
        second = serve("--port", "0", "--state-dir", str(tmp_path / "state"))
        assert second.returncode == 2 and "another flageval serve uses the state directory" in second.stderr
    finally:
        first.stop()


def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = serve("--port", str(busy.getsockname()[1]), "--state-dir", str(tmp_path))
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr
