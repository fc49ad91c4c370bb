"""`flageval eval` end to end against the reference model: exact accuracy, faults, kill and resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.datasets.files import read_jsonl
from flageval.mock_model.answers import default_answerer, gsm8k_key, intended_accuracy
from flageval.mock_model.server import FaultPlan, parse_fault_rates, serve_in_thread

DATA = default_data_dir()
ACCURACY, SEED = 0.7, 5


def eval_cmd(url: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "qwen", "--output", str(output), "--no-cache", "--json", *extra]


def run_json(cmd: list[str], timeout: float = 300) -> tuple[int, dict]:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def details(report: dict) -> dict[str, dict]:
    return {d["dataset"]: d for d in report["details"]}


@pytest.fixture(scope="module")
def clean_model():
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED)) as url:
        yield url


def test_accuracy_is_what_the_model_intended_on_both_endpoint_kinds(clean_model, tmp_path):
    code, report = run_json(eval_cmd(clean_model.chat_url, tmp_path / "chat", "--datasets", "gsm8k,mmlu", "--limit", "40", "--num-concurrent", "8"))
    assert code == 0 and report["status"] == "S"
    got = details(report)
    assert got["gsm8k"]["accuracy"] == intended_accuracy("gsm8k", DATA, ACCURACY, SEED, 40)
    assert got["mmlu"]["accuracy"] == intended_accuracy("mmlu", DATA, ACCURACY, SEED, 40)
    assert got["gsm8k"]["progress"] == "40/40" and got["mmlu"]["progress"] == f"{57 * 40}/{57 * 40}"

    code, report = run_json(eval_cmd(clean_model.completions_url, tmp_path / "completions", "--datasets", "mmlu", "--limit", "10", "--batch-size", "8", "--num-concurrent", "4"))
    assert code == 0
    assert details(report)["mmlu"]["metrics"]["acc"] == intended_accuracy("mmlu", DATA, ACCURACY, SEED, 10)


def test_baseline_diff_and_release(clean_model, tmp_path):
    run_json(eval_cmd(clean_model.chat_url, tmp_path / "base", "--datasets", "gsm8k", "--limit", "100", "--eval-model", "q-nvidia-origin", "--num-concurrent", "8"))
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED + 1)) as other:
        code, report = run_json(eval_cmd(other.chat_url, tmp_path / "other", "--datasets", "gsm8k", "--limit", "100", "--chip", "Ascend-910B", "--baseline", str(tmp_path / "base"), "--num-concurrent", "8"))
    expected_diff = round(intended_accuracy("gsm8k", DATA, ACCURACY, SEED + 1, 100) - intended_accuracy("gsm8k", DATA, ACCURACY, SEED, 100), 2)
    gsm8k = details(report)["gsm8k"]
    assert code == 0
    assert gsm8k["diff"] == expected_diff != 0
    assert report["release"] is (abs(expected_diff) < 0.5)
    assert 0 <= gsm8k["p_value"] <= 1 and gsm8k["diff_ci"][0] <= expected_diff <= gsm8k["diff_ci"][1]


def test_thirty_percent_faults_change_nothing(clean_model, tmp_path):
    _, clean = run_json(eval_cmd(clean_model.chat_url, tmp_path / "clean", "--datasets", "gsm8k", "--limit", "120", "--num-concurrent", "8"))
    plan = FaultPlan(parse_fault_rates("0.3"), seed=3, retry_after=0.05)
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED), faults=plan) as faulty:
        code, report = run_json(eval_cmd(faulty.chat_url, tmp_path / "faulty", "--datasets", "gsm8k", "--limit", "120", "--num-concurrent", "8"))
        faults = faulty.stats()["faults"]
    assert code == 0, report
    assert set(faults) == {"503", "429", "500", "reset", "bad_json"}, faults
    assert details(report)["gsm8k"]["accuracy"] == details(clean)["gsm8k"]["accuracy"]
    mine = [json.loads(line) for line in (tmp_path / "faulty/gsm8k/samples.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (tmp_path / "clean/gsm8k/samples.jsonl").read_text().splitlines()]
    assert [(r["id"], r["scores"]) for r in mine] == [(r["id"], r["scores"]) for r in theirs]


def test_endpoint_that_always_fails_ends_oor_quickly(tmp_path):
    plan = FaultPlan({"500": 1.0}, seed=1)
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED), faults=plan) as broken:
        started = time.monotonic()
        code, report = run_json(eval_cmd(broken.chat_url, tmp_path, "--datasets", "gsm8k", "--limit", "50", "--num-retry", "3"))
        elapsed = time.monotonic() - started
    gsm8k = details(report)["gsm8k"]
    assert code != 0 and gsm8k["status"] == "OOR"
    assert "50 of 50 samples failed" in gsm8k["message"] and "500" in gsm8k["message"]
    assert elapsed < 60  # a bound that only catches a run that retries every sample to exhaustion


def journaled_ids(journal: Path) -> set[str]:
    ids = set()
    if journal.exists():
        for line in journal.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if record.get("error") is None:
                ids.add(record["id"])
    return ids


def test_sigkill_at_five_points_then_resume_sends_nothing_twice(tmp_path):
    limit = 400
    questions = [d["question"] for d in read_jsonl(DATA / "gsm8k/test.jsonl", ("question",))[:limit]]
    key_of = {f"gsm8k/{i}": gsm8k_key(q) for i, q in enumerate(questions)}
    rng = random.Random(42)
    output = tmp_path / "run"
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED), latency=0.02) as model:
        cmd = eval_cmd(model.chat_url, output, "--datasets", "gsm8k", "--limit", str(limit), "--num-concurrent", "4")
        journal = output / "gsm8k/journal.jsonl"
        before: set[str] = set()
        # Five random points of progress; each run is killed once the journal has reached its point.
        for point in sorted(rng.sample(range(20, limit - 40), 5)):
            model.reset_stats()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while len(journaled_ids(journal)) < point and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            resent = [k for k in (key_of[i] for i in before) if model.stats()["by_key"].get(k)]
            assert not resent, f"{len(resent)} journaled samples were asked again"
            after = journaled_ids(output / "gsm8k/journal.jsonl")
            assert before <= after
            before = after
        assert 0 < len(before) < limit, "the kills should land mid-run"
        model.reset_stats()
        code, report = run_json(cmd)
        by_key = model.stats()["by_key"]
    assert code == 0
    assert not [i for i in before if by_key.get(key_of[i])]
    assert sum(by_key.get(key_of[i], 0) for i in key_of if i not in before) >= limit - len(before)
    assert details(report)["gsm8k"]["accuracy"] == intended_accuracy("gsm8k", DATA, ACCURACY, SEED, limit)
    assert details(report)["gsm8k"]["progress"] == f"{limit}/{limit}"


def test_an_output_directory_resumes_only_its_own_run(clean_model, tmp_path):
    code, first = run_json(eval_cmd(clean_model.chat_url, tmp_path, "--datasets", "gsm8k", "--limit", "20"))
    assert code == 0
    code, other = run_json(eval_cmd(clean_model.chat_url, tmp_path, "--datasets", "gsm8k", "--limit", "30"))
    gsm8k = details(other)["gsm8k"]
    assert code != 0 and gsm8k["status"] == "F"
    assert "limit differ" in gsm8k["message"]
    kept = json.loads((tmp_path / "gsm8k/result.json").read_text())
    assert kept["accuracy"] == details(first)["gsm8k"]["accuracy"] and kept["progress"] == "20/20"
