"""`flageval eval --mode classic` end to end against the reference model: every dataset at the score the
model intended; killed and resumed, nothing asked twice; 30 % faulty calls, the same scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from flageval.datasets import SUITES, default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.answers_tasks import TaskAnswerer, task_names
from flageval.mock_model.server import FaultPlan, parse_fault_rates, serve_in_thread

DATA = default_data_dir()
ACCURACY, SEED, LIMIT = 0.7, 5, 4


def math_extra_installed() -> bool:
    try:
        import lm_eval.tasks.minerva_math.utils  # noqa: F401
    except (ImportError, AssertionError):
        return False
    return True


def answerer(limit: int = LIMIT) -> TaskAnswerer:
    return TaskAnswerer(DATA, task_names("classic"), ACCURACY, SEED, fallback=default_answerer(DATA, ACCURACY, SEED),
                        limit=limit)


@pytest.fixture(scope="module")
def model():
    reference = answerer()
    with serve_in_thread(reference) as url:
        yield url, reference


def classic(url: str, output: Path, *extra: str, timeout: float = 900) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "qwen", "--output", str(output),
           "--no-cache", "--json", "--mode", "classic", "--limit", str(LIMIT), "--num-concurrent", "8",
           "--allow-code-execution", *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def details(report: dict) -> dict[str, dict]:
    return {d["dataset"]: d for d in report["details"]}


def test_every_classic_dataset_scores_what_the_model_intended(model, tmp_path):
    url, reference = model
    code, report = classic(url.completions_url, tmp_path)
    got = details(report)
    assert list(got) == SUITES["NLP"]["classic"]
    for name, row in got.items():
        if name == "minerva_math500" and not math_extra_installed():
            assert row["status"] == "F" and "math_verify" in row["message"], row
            continue
        assert row["status"] == "S", (name, row["message"])
        if name in ("gsm8k", "mmlu"):
            assert row["accuracy"] == intended_accuracy(name, DATA, ACCURACY, SEED, LIMIT), name
        else:
            assert row["accuracy"] == pytest.approx(reference.intended(name, LIMIT), abs=0.01), name
    assert got["bbh_cot_fewshot"]["progress"] == f"{27 * LIMIT}/{27 * LIMIT}"
    assert "exact_match,get-answer" in got["bbh_cot_fewshot"]["metrics"]
    assert "inst_level_strict_acc,none" in got["ifeval"]["metrics"]
    assert code == (0 if math_extra_installed() else 1)


def test_loglikelihood_datasets_on_a_chat_endpoint_say_what_they_need(model, tmp_path):
    url, _ = model
    _, report = classic(url.chat_url, tmp_path, "--datasets", "arc_challenge,bbh_cot_fewshot_snarks")
    got = details(report)
    assert got["arc_challenge"]["status"] == "F"
    assert "needs a completions endpoint" in got["arc_challenge"]["message"]
    assert got["bbh_cot_fewshot_snarks"]["status"] == "S"


def test_thirty_percent_faults_give_the_same_scores(model, tmp_path):
    url, _ = model
    names = "arc_challenge,hellaswag,bbh_cot_fewshot,ifeval,aime24,humaneval"
    _, clean = classic(url.completions_url, tmp_path / "clean", "--datasets", names)
    plan = FaultPlan(parse_fault_rates("0.3"), seed=3, retry_after=0.05)
    with serve_in_thread(model[1], faults=plan) as faulty:
        code, report = classic(faulty.completions_url, tmp_path / "faulty", "--datasets", names)
        faults = faulty.stats()["faults"]
    assert code == 0, report
    assert sum(faults.values()) > 20, faults
    for name in names.split(","):
        assert details(report)[name]["metrics"] == details(clean)[name]["metrics"], name
        mine = (tmp_path / "faulty" / name / "samples.jsonl").read_text().splitlines()
        theirs = (tmp_path / "clean" / name / "samples.jsonl").read_text().splitlines()
        assert [(json.loads(a)["id"], json.loads(a)["scores"]) for a in mine] == \
               [(json.loads(b)["id"], json.loads(b)["scores"]) for b in theirs]


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


def test_killed_and_resumed_nothing_is_asked_twice(tmp_path):
    limit = 12
    reference = TaskAnswerer(DATA, ["bbh_cot_fewshot"], ACCURACY, SEED, limit=limit)
    key_of = {f"bbh_cot_fewshot/{key.split(':')[0]}/{doc_id}": key for doc_id, key in reference.keys["bbh_cot_fewshot"]}
    output = tmp_path / "run"
    journal = output / "bbh_cot_fewshot" / "journal.jsonl"
    with serve_in_thread(reference, latency=0.02) as model:
        cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", model.chat_url, "--model", "qwen", "--output",
               str(output), "--no-cache", "--json", "--datasets", "bbh_cot_fewshot", "--limit", str(limit),
               "--num-concurrent", "4"]
        before: set[str] = set()
        for point in (40, 150, 260):
            model.reset_stats()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 120
            while len(journaled_ids(journal)) < point and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            resent = [i for i in before if model.stats()["by_key"].get(key_of[i])]
            assert not resent, f"{len(resent)} journaled samples were asked again"
            after = journaled_ids(journal)
            assert before <= after
            before = after
        assert 0 < len(before) < len(key_of), "the kills should land mid-run"
        model.reset_stats()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        by_key = model.stats()["by_key"]
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [i for i in before if by_key.get(key_of[i])]
    row = details(report)["bbh_cot_fewshot"]
    assert row["progress"] == f"{len(key_of)}/{len(key_of)}"
    assert row["accuracy"] == pytest.approx(reference.intended("bbh_cot_fewshot", limit), abs=0.01)
