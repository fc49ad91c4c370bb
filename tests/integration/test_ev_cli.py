"""`flageval eval` on the Embodied datasets against the reference model: the pictures travel, the
accuracy is what the model meant to score (with faults, with thinking, across kills), and a broken
picture or a slow sample fails only itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answerer import intends_correct
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.answers_ev import problem_key
from flageval.mock_model.server import FaultPlan, parse_fault_rates, serve_in_thread
from support.ev_fixtures import write_ev_fixtures

DATA = default_data_dir()
ACCURACY, SEED = 0.6, 11
PCA = "pca_eval_domestic"
EV = ("pca_eval_domestic", "erqa", "where2place")
pytestmark = pytest.mark.skipif(not (DATA / PCA / "meta_data.json").is_file(), reason="no PCA-EVAL data")


def run_eval(url: str, output: Path, *extra: str, datasets: str = PCA) -> tuple[int, dict, str]:
    cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "robobrain", "--output", str(output),
           "--no-cache", "--json", "--datasets", datasets, *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def detail_of(report: dict, name: str = PCA) -> dict:
    (detail,) = [d for d in report["details"] if d["dataset"] == name]
    return detail


def samples(output: Path, name: str = PCA) -> list[dict]:
    return [json.loads(line) for line in (output / name / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ev_data(tmp_path_factory):
    """The bundled PCA-EVAL beside small ERQA and Where2Place files in their formats."""
    return write_ev_fixtures(tmp_path_factory.mktemp("ev") / "data", DATA / PCA)


@pytest.fixture(scope="module")
def answerer(ev_data):
    return default_answerer(ev_data, ACCURACY, SEED)


@pytest.fixture(scope="module")
def model(answerer):
    with serve_in_thread(answerer) as url:
        yield url


def test_pca_eval_scores_exactly_what_the_model_intended(model, answerer, tmp_path):
    code, report, _ = run_eval(model.chat_url, tmp_path / "run", "--num-concurrent", "4")
    assert code == 0 and report["status"] == "S", report
    detail = detail_of(report)
    expected = intended_accuracy(PCA, DATA, ACCURACY, SEED)
    assert 0 < expected < 100
    assert detail["accuracy"] == expected and detail["progress"] == "100/100"
    assert not answerer.ev.image_faults  # every picture arrived in its place
    records = samples(tmp_path / "run")
    assert len(records) == 100 and not any(r.get("error") for r in records)
    rules = {r["extracted"]["rule"] for r in records}
    assert rules == {"declared", "leading", "text"}, rules  # the model's phrasings reach every lenient rule
    shown = json.dumps(records[0]["prompt"])
    assert "imgs/" in shown and "/9j/" not in shown and len(shown) < 2000  # the file name, not the picture


def test_every_ev_format_scores_what_the_model_intended(model, answerer, ev_data, tmp_path):
    code, report, _ = run_eval(model.chat_url, tmp_path / "run", "--data-dir", str(ev_data), "--num-concurrent", "4",
                               datasets=",".join(EV))
    assert code == 0 and report["status"] == "S", report
    for name in EV:
        detail = detail_of(report, name)
        assert detail["accuracy"] == intended_accuracy(name, ev_data, ACCURACY, SEED), name
        assert not any(r.get("error") for r in samples(tmp_path / "run", name))
    assert 0 < detail_of(report, "erqa")["accuracy"] < 100 and 0 < detail_of(report, "where2place")["accuracy"] < 100
    assert not answerer.ev.image_faults


def test_twenty_percent_faults_and_thinking_change_nothing(answerer, ev_data, tmp_path):
    faults = FaultPlan(parse_fault_rates("0.2"), seed=3, retry_after=0.05)
    for reasoning_field in (False, True):
        output = tmp_path / f"run-{reasoning_field}"
        with serve_in_thread(answerer, faults=faults, reasoning_field=reasoning_field) as url:
            code, report, _ = run_eval(url.chat_url, output, "--num-concurrent", "6", "--thinking", "--num-retry", "10",
                                       "--data-dir", str(ev_data), datasets=",".join(EV))
            seen = url.stats()["faults"]
        assert code == 0, report
        for name in EV:
            assert detail_of(report, name)["accuracy"] == intended_accuracy(name, ev_data, ACCURACY, SEED), name
            # The thought names another option or other points; it was set aside, never scored.
            responses = [r["response"] for r in samples(output, name)]
            assert not [t for t in responses if "<think>" in t or "glance" in t or "Maybe here" in t]
        assert sum(seen.values()) >= 10, seen


def journaled_ids(journal: Path) -> set[str]:
    ids: set[str] = set()
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("error") is None and "id" in record:
                ids.add(record["id"])
    return ids


def test_killed_twice_then_resumed_sends_nothing_twice(answerer, tmp_path):
    output = tmp_path / "run"
    journal = output / PCA / "journal.jsonl"
    key_of = {f"{PCA}/{i}": problem_key(PCA, str(i)) for i in range(100)}
    with serve_in_thread(answerer, latency=0.05) as model:
        cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", model.chat_url, "--model", "robobrain",
               "--output", str(output), "--no-cache", "--json", "--datasets", PCA, "--num-concurrent", "2"]
        before: set[str] = set()
        for point in (15, 45):
            model.reset_stats()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 120
            while len(journaled_ids(journal)) < point and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert not [i for i in before if model.stats()["by_key"].get(key_of[i])], "journaled samples were asked again"
            after = journaled_ids(journal)
            assert before <= after
            before = after
        assert 0 < len(before) < 100
        model.reset_stats()
        code, report, _ = run_eval(model.chat_url, output, "--num-concurrent", "2")
        by_key = model.stats()["by_key"]
    assert code == 0
    assert not [i for i in before if by_key.get(key_of[i])]
    assert all(by_key.get(key_of[i]) for i in key_of if i not in before)
    assert detail_of(report)["accuracy"] == intended_accuracy(PCA, DATA, ACCURACY, SEED)


def test_a_corrupt_picture_fails_its_sample_and_a_slow_one_its_deadline(answerer, tmp_path):
    data = tmp_path / "data"
    folder = data / PCA
    shutil.copytree(DATA / PCA, folder, ignore=shutil.ignore_patterns("imgs"))
    meta = json.loads((folder / "meta_data.json").read_text())[:6]
    (folder / "meta_data.json").write_text(json.dumps(meta))
    (folder / "imgs").mkdir()
    for row in meta:
        shutil.copy(DATA / PCA / row["image"], folder / row["image"])
    broken = meta[2]["image"]
    (folder / broken).write_bytes(b"\xff\xd8 not a picture")
    victims = {str(row["index"]) for row in meta if row["image"] == broken}
    # The answers come from the full data (same prompts); the stalled sample waits past its deadline.
    stall_key = problem_key(PCA, str(meta[4]["index"]))
    assert str(meta[4]["index"]) not in victims

    class Stalling(FaultPlan):
        def pick(self, key: str, nth: int) -> str | None:
            return "stall" if key == stall_key else None

    with serve_in_thread(answerer, faults=Stalling(stall_seconds=30)) as url:
        code, report, _ = run_eval(url.chat_url, tmp_path / "run", "--data-dir", str(data), "--retry-time", "2",
                                   "--num-concurrent", "3")
    detail = detail_of(report)
    failed = {r["id"]: r["error"] for r in samples(tmp_path / "run") if r.get("error")}
    assert set(failed) == {f"{PCA}/{i}" for i in victims} | {f"{PCA}/{meta[4]['index']}"}
    assert all(broken in failed[f"{PCA}/{i}"] for i in victims)
    assert "retry_time (2s)" in failed[f"{PCA}/{meta[4]['index']}"]
    good = [str(row["index"]) for row in meta if str(row["index"]) not in victims and row is not meta[4]]
    right = sum(intends_correct(problem_key(PCA, i), ACCURACY, SEED) for i in good)
    assert detail["accuracy"] == round(right / len(good) * 100, 2)
    assert detail["status"] == "OOR" and code != 0 and detail["progress"] == "6/6"


def test_a_truncated_tfrecord_fails_its_dataset_only(model, tmp_path):
    data = write_ev_fixtures(tmp_path / "data")
    tfrecord = data / "erqa" / "erqa.tfrecord"
    tfrecord.write_bytes(tfrecord.read_bytes()[:-10])
    code, report, _ = run_eval(model.chat_url, tmp_path / "run", "--data-dir", str(data), datasets="erqa,where2place")
    erqa, where2place = detail_of(report, "erqa"), detail_of(report, "where2place")
    assert code != 0 and erqa["status"] == "F" and where2place["status"] == "S"
    assert f"{tfrecord}: record 5 at byte" in erqa["message"] and "is truncated" in erqa["message"]
