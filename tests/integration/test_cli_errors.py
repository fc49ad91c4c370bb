"""Bad input to `flageval eval`: a one-line error naming the cause, a non-zero exit, no traceback."""

import subprocess
import sys

import pytest
from flageval.mock_model.server import serve_in_thread
from support.net import free_port


def flageval(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flageval.cli", *args], check=False, capture_output=True, text=True, timeout=timeout)



@pytest.fixture(scope="module")
def mock():
    with serve_in_thread() as url:
        yield url


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("flageval: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_unknown_dataset(mock, tmp_path):
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--datasets", "gsm8k,nope", "--output", str(tmp_path))
    assert_clean_error(proc, "unknown dataset nope", "gsm8k")


def test_malformed_gen_kwargs(mock, tmp_path):
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--gen-kwargs", "temperature=0,max_gen_toks", "--output", str(tmp_path))
    assert_clean_error(proc, "gen_kwargs", "max_gen_toks")


def test_unreachable_host(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    proc = flageval("eval", "--url", url, "--model", "m", "--datasets", "gsm8k", "--output", str(tmp_path))
    assert_clean_error(proc, "cannot connect", "127.0.0.1")


def test_wrong_url_path(mock, tmp_path):
    proc = flageval("eval", "--url", f"{mock}/v1/chat/complete", "--model", "m", "--datasets", "gsm8k", "--output", str(tmp_path))
    assert_clean_error(proc, "404", "/v1/chat/complete")


def test_url_that_is_not_a_url(tmp_path):
    proc = flageval("eval", "--url", "localhost:9010", "--model", "m", "--output", str(tmp_path))
    assert_clean_error(proc, "eval_url")


def test_bad_chip(mock, tmp_path):
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--chip", "H100", "--output", str(tmp_path))
    assert_clean_error(proc, "chip")


def test_unreadable_data_file(mock, tmp_path):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    (data / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\nnot json at all\n')
    (data / "gsm8k" / "train.jsonl").write_text('{"question": "2+2?", "answer": "#### 4"}\n')
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--datasets", "gsm8k", "--data-dir", str(data), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "test.jsonl")


def test_missing_data_dir(mock, tmp_path):
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--datasets", "gsm8k", "--data-dir", str(tmp_path / "absent"), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, str(tmp_path / "absent"))


def test_baseline_without_results(mock, tmp_path):
    proc = flageval("eval", "--url", mock.chat_url, "--model", "m", "--baseline", str(tmp_path), "--output", str(tmp_path / "out"))
    assert_clean_error(proc, "--baseline")
