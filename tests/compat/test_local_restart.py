"""`flageval serve` restarted while an evaluation runs — killed outright, then stopped cleanly — keeps the
evaluation, continues it from the runners' journals, and finishes without asking a sample twice."""

from __future__ import annotations

import signal

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info, ratio

DATA = default_data_dir()
ACCURACY, SEED, LIMIT, CONCURRENT = 0.7, 11, 6, 2
SAMPLES = LIMIT + 57 * LIMIT


def test_restart_continues_without_repeating_samples(start_shim):
    args = ("--limit", str(LIMIT), "--no-cache")  # no response cache: only the journals can spare a request
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED), latency=0.02) as model:
        shim = start_shim(*args)
        client = FlagEvalClient(shim.url)
        rid = client.evaluation([eval_info("qwen-nvidia-origin", "qwen", model.chat_url, num_concurrent=CONCURRENT)])["request_id"]

        def in_mmlu(after: int):
            return lambda a: a["running_dataset"] == "mmlu" and after <= ratio(a["running_progress"])[0] < ratio(a["running_progress"])[1] - 60

        before_kill = ratio(client.wait(rid, in_mmlu(30))["running_progress"])[0]
        shim.stop(signal.SIGKILL)  # a crash: the kernel sends each runner SIGTERM and they flush
        client.close()

        shim = start_shim(*args, state_dir=shim.state_dir)
        client = FlagEvalClient(shim.url)
        answer = client.evaluation_progress(rid)
        assert answer["err_code"] == 0 and answer["status"] in ("P", "R")
        resumed_at = ratio(client.wait(rid, lambda a: a["running_dataset"] == "mmlu")["running_progress"])[0]
        assert resumed_at >= before_kill - CONCURRENT  # nothing journaled was lost
        client.wait(rid, in_mmlu(resumed_at + 40))
        assert shim.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # a clean stop: runners flush, tasks stay running on disk
        client.close()

        shim = start_shim(*args, state_dir=shim.state_dir)
        client = FlagEvalClient(shim.url)
        final = client.wait_finished(rid)
        assert final["status"] == "S" and final["datasets_progress"] == "2/2"
        stats = model.stats()
        details = client.evaldiffs(rid)["eval_results"]["qwen-nvidia-origin"][0]["details"]
        client.close()

    counts = stats["by_key"]
    assert len(counts) == SAMPLES and "unknown" not in counts
    # Only requests in flight at the two restarts (CONCURRENT per running dataset) could be asked again.
    repeated = sum(counts.values()) - len(counts)
    assert max(counts.values()) <= 2 and repeated <= 2 * 2 * CONCURRENT, repeated
    assert {d["dataset"]: d["accuracy"] for d in details} == {ds: intended_accuracy(ds, DATA, ACCURACY, SEED, LIMIT) for ds in ("gsm8k", "mmlu")}
    assert "Traceback" not in shim.log()
    # The mmlu runner was stopped twice and flushed its journal both times: by the kernel when the server
    # was killed, by the server when it was stopped.
    runner_log = next(shim.state_dir.glob("evaluations/*/logs/qwen-nvidia-origin.mmlu.log")).read_text()
    assert runner_log.count("stopped by SIGTERM") == 2 and runner_log.count("--- attempt") == 3
