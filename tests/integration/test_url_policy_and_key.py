"""The URL policy and the API key on the CLI and `flageval runner` paths, as real processes against the
reference model: a refused address is refused before anything is sent (the runner) or warned about
(the CLI); a planted key, quoted back by the endpoint in its error bodies, is found in none of the
files, outputs or metrics a run produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval.results import read_result, run_paths
from support.net import free_port
from support.secrets import places_holding

DATA = default_data_dir()
DENY_LOOPBACK = {"FLAGEVAL_URL_DENY": "127.0.0.0/8,::1"}


def runner(url: str, output, *args: str, key: str = "EMPTY", num_retry: int = 4, **env: str) -> subprocess.Popen:
    info = {"eval_model": "q-nvidia-origin", "model": "qwen3", "eval_url": url, "num_concurrent": 2, "num_retry": num_retry, "retry_time": 60}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEVAL_URL_")}
    return subprocess.Popen([sys.executable, "-m", "flageval.cli", "runner", "--dataset", "gsm8k", "--output", str(output), *args],
                            env={**environment, "FLAGEVAL_EVAL_INFO": json.dumps(info), "FLAGEVAL_API_KEY": key, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_runner_refuses_a_name_resolving_to_a_denied_address_and_sends_nothing(tmp_path):
    """`localhost` passes any check by name; what it resolves to (127.0.0.1) is denied here."""
    with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
        url = model.chat_url.replace("127.0.0.1", "localhost")
        proc = runner(url, tmp_path / "denied", "--limit", "5", **DENY_LOOPBACK)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, out
        result = read_result(run_paths(tmp_path / "denied", "gsm8k"))
        assert result.status.value == "F" and result.message == (
            f"eval_url {url}: 'localhost' resolves to 127.0.0.1, which is refused by FLAGEVAL_URL_DENY (127.0.0.0/8)"), result.message
        metadata = runner("http://169.254.169.254/v1/chat/completions", tmp_path / "metadata", "--limit", "5")
        out, _ = metadata.communicate(timeout=120)
        assert metadata.returncode == 2 and "169.254.169.254 is link-local" in read_result(run_paths(tmp_path / "metadata", "gsm8k")).message, out
        assert model.stats()["total"] == 0

        # The same URL with the default policy: evaluated.
        allowed = runner(url, tmp_path / "allowed", "--limit", "5")
        out, _ = allowed.communicate(timeout=120)
        assert allowed.returncode == 0, out
        assert read_result(run_paths(tmp_path / "allowed", "gsm8k")).accuracy == intended_accuracy("gsm8k", DATA, 0.7, 5, 5)


def test_cli_warns_about_a_refused_url_and_still_runs(tmp_path):
    with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
        url = model.chat_url.replace("127.0.0.1", "localhost")
        proc = subprocess.run([sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "qwen", "--datasets", "gsm8k",
                               "--limit", "5", "--no-cache", "--json", "--output", str(tmp_path / "out")],
                              check=False, capture_output=True, text=True, timeout=120, env={**os.environ, **DENY_LOOPBACK})
    assert proc.returncode == 0, proc.stderr
    assert (f"flageval: warning: eval_url {url}: 'localhost' resolves to 127.0.0.1, which is refused by FLAGEVAL_URL_DENY "
            "(127.0.0.0/8) (the operator and the REST API refuse it; this run goes on)") in " ".join(proc.stderr.split())
    assert json.loads(proc.stdout)["details"][0]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 5, 5)


def echoing_model(key: str):
    """Demands `key`, and quotes the Authorization header it got in every error body; half the attempts fail."""
    return serve_in_thread(default_answerer(DATA, 0.7, 5), api_key=key, echo_auth=True, faults=FaultPlan({"500": 0.5}, seed=2))


def assert_key_nowhere(key: str, texts: dict[str, str], roots) -> None:
    found, read = places_holding(key, texts, roots)
    assert not found, f"the API key is in {found}"
    # The search was not empty-handed: the quoted headers reached the recorded errors, redacted.
    redacted, _ = places_holding("Authorization: Bearer [redacted]", texts, roots)
    assert read >= 4 and any(p.endswith("journal.jsonl") for p in redacted), (read, redacted)


def test_cli_run_keeps_a_quoted_key_out_of_everything(tmp_path):
    key = f"sk-cli-{uuid.uuid4()}"
    with echoing_model(key) as model:
        proc = subprocess.run([sys.executable, "-m", "flageval.cli", "eval", "--url", model.chat_url, "--model", "qwen",
                               "--datasets", "gsm8k", "--limit", "30", "--num-retry", "1", "--api-key", key, "--json",
                               "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out")],
                              check=False, capture_output=True, text=True, timeout=300)
        assert model.stats()["faults"]["500"] > 0
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["details"][0]["status"] == "OOR", proc.stderr  # the failed samples are the point
    assert_key_nowhere(key, {"stdout": proc.stdout, "stderr": proc.stderr}, [tmp_path / "out", tmp_path / "cache"])


def test_runner_keeps_a_quoted_key_out_of_everything(tmp_path):
    key = f"sk-runner-{uuid.uuid4()}"
    port = free_port()
    with echoing_model(key) as model:
        proc = runner(model.chat_url, tmp_path / "out", "--limit", "30", "--metrics-port", str(port),
                      "--cache-dir", str(tmp_path / "cache"), key=key, num_retry=1)
        scraped = []
        while proc.poll() is None:
            try:
                scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
            except OSError:
                pass
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out  # OOR: some samples failed with the quoted header in their error
    assert_key_nowhere(key, {"output": out, **{f"/metrics #{i}": text for i, text in enumerate(scraped)}},
                       [tmp_path / "out", tmp_path / "cache"])
