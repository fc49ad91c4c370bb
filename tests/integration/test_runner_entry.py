"""`flageval runner`, the entry point of every Job's pod: one dataset against one service, configured by
environment, with Prometheus metrics served while it runs and kept beside the results at its end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval.results import read_result, run_paths
from prometheus_client.parser import text_string_to_metric_families
from support.net import free_port

DATA = default_data_dir()



def runner(url: str, output, *args: str, **env: str) -> subprocess.Popen:
    info = {"eval_model": "q-nvidia-origin", "model": "qwen3", "eval_url": url, "num_concurrent": 2, "num_retry": 8, "retry_time": 60}
    return subprocess.Popen([sys.executable, "-m", "flageval.cli", "runner", "--dataset", "gsm8k", "--output", str(output), *args],
                            env={**os.environ, "FLAGEVAL_EVAL_INFO": json.dumps(info), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def samples(text: str, name: str) -> dict[tuple, float]:
    """{labels as sorted items: value} of one metric family's samples named `name`."""
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def test_runner_serves_and_keeps_request_latency_and_error_metrics(tmp_path):
    port, limit = free_port(), 40
    # One attempt in five answers 503: retried, counted as errors, and the run still succeeds.
    with serve_in_thread(default_answerer(DATA, 0.7, 5), latency=0.02, faults=FaultPlan({"503": 0.2}, seed=3)) as model:
        proc = runner(model.chat_url, tmp_path, "--limit", str(limit), "--metrics-port", str(port))
        scraped = ""
        while proc.poll() is None and "flageval_engine_requests_total" not in scraped:
            try:
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                time.sleep(0.05)
        out, _ = proc.communicate(timeout=120)
        asked = model.stats()["total"]
    assert proc.returncode == 0, out
    assert "flageval_engine_requests_total" in scraped  # served while the run lasted

    result = read_result(run_paths(tmp_path, "gsm8k"))
    assert result.accuracy == intended_accuracy("gsm8k", DATA, 0.7, 5, limit)
    kept = run_paths(tmp_path, "gsm8k").metrics.read_text()
    requests = samples(kept, "flageval_engine_requests_total")
    ok, errors = requests[(("outcome", "ok"),)], requests.get((("outcome", "http_5xx"),), 0)
    assert ok == limit and errors > 0 and ok + errors == asked
    assert samples(kept, "flageval_engine_retries_total")[()] == errors
    assert samples(kept, "flageval_engine_request_seconds_count")[()] == asked
    assert samples(kept, "flageval_engine_samples_total")[(("result", "ok"),)] == limit


def test_a_port_in_use_costs_the_endpoint_not_the_run(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
            proc = runner(model.chat_url, tmp_path, "--limit", "5", FLAGEVAL_RUNNER_METRICS_PORT=str(port))
            out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"no /metrics on port {port}" in out
    assert read_result(run_paths(tmp_path, "gsm8k")).progress == "5/5"


def test_a_result_that_cannot_be_reported_fails_the_runner_and_keeps_the_result_on_disk(tmp_path):
    """The API server never answers (nothing listens on its port): the runner evaluates, retries its final
    report for FLAGEVAL_REPORT_PATIENCE seconds, then exits 3, not 0 — and the result stays on the volume."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}], "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
        proc = runner(model.chat_url, tmp_path / "out", "--limit", "5", KUBECONFIG=str(kubeconfig), FLAGEVAL_TASK_RESULT="ns/task",
                      FLAGEVAL_REPORT_PATIENCE="3")
        out, _ = proc.communicate(timeout=120)
        asked = model.stats()["total"]
    assert proc.returncode == 3, out
    assert "cannot report to ns/task for now, retrying" in out
    assert "the result of ns/task was not accepted within 3 s" in out
    result = read_result(run_paths(tmp_path / "out", "gsm8k"))
    assert asked == 5 and result.progress == "5/5" and result.accuracy == intended_accuracy("gsm8k", DATA, 0.7, 5, 5)
