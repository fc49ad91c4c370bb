"""`flageval eval --datasets mathvision` end to end against the reference model: the images travel,
the accuracy is exactly what the model meant to score, and broken images or absent data are reported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answerer import intends_correct
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.answers_mm import problem_key
from flageval.mock_model.server import FaultPlan, serve_in_thread

DATA = default_data_dir()
ACCURACY, SEED, LIMIT = 0.6, 7, 40
pytestmark = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")


def run_eval(url: str, output: Path, *extra: str) -> tuple[int, dict, str]:
    cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "qwen-vl", "--output", str(output),
           "--no-cache", "--json", "--datasets", "mathvision", *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def mathvision(report: dict) -> dict:
    (detail,) = [d for d in report["details"] if d["dataset"] == "mathvision"]
    return detail


def samples(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "mathvision" / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def model():
    answerer = default_answerer(DATA, ACCURACY, SEED)
    with serve_in_thread(answerer) as url:
        yield url, answerer


def test_the_cli_scores_exactly_what_the_model_intended(model, tmp_path):
    url, answerer = model
    code, report, _ = run_eval(url.chat_url, tmp_path / "run", "--limit", str(LIMIT), "--num-concurrent", "4")
    assert code == 0 and report["status"] == "S", report
    detail = mathvision(report)
    expected = intended_accuracy("mathvision", DATA, ACCURACY, SEED, LIMIT)
    assert 0 < expected < 100
    assert detail["accuracy"] == expected
    assert detail["progress"] == f"{LIMIT}/{LIMIT}"
    # Every picture reached the model in its place: nothing answered blind.
    assert not answerer.mathvision.image_faults
    records = samples(tmp_path / "run")
    assert len(records) == LIMIT and not any(r.get("error") for r in records)
    # The records show the prompt with the picture's file name in place of its data.
    shown = json.dumps(records[0]["prompt"])
    assert "images/" in shown and len(shown) < 2000


def test_a_broken_image_fails_its_sample_and_the_run_goes_on(model, tmp_path):
    url, _ = model
    data = tmp_path / "data"
    folder = data / "mathvision"
    (folder / "images").mkdir(parents=True)
    lines = (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines()[:8]
    (folder / "testmini.jsonl").write_text("\n".join(lines) + "\n")
    ids = [str(json.loads(line)["id"]) for line in lines]
    for problem_id in ids:
        shutil.copy(DATA / "mathvision" / "images" / f"{problem_id}.jpg", folder / "images")
    (folder / "images" / f"{ids[1]}.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "images" / f"{ids[4]}.jpg").unlink()

    code, report, _ = run_eval(url.chat_url, tmp_path / "run", "--data-dir", str(data))
    detail = mathvision(report)
    failed = {r["id"]: r["error"] for r in samples(tmp_path / "run") if r.get("error")}
    assert set(failed) == {f"mathvision/{ids[1]}", f"mathvision/{ids[4]}"}
    assert f"{ids[1]}.jpg" in failed[f"mathvision/{ids[1]}"] and f"{ids[4]}.jpg" in failed[f"mathvision/{ids[4]}"]
    assert detail["n_failed"] == 2 and detail["progress"] == "8/8"
    # The six good samples are scored as the model intended them.
    good = [i for n, i in enumerate(ids) if n not in (1, 4)]
    right = sum(intends_correct(problem_key(i), ACCURACY, SEED) for i in good)
    assert detail["accuracy"] == round(right / len(good) * 100, 2)
    assert code != 0 and detail["status"] != "S"  # failed samples keep the run from success
    # No attempt was spent on the two: the message counts them and quotes the reason, nothing more.
    assert detail["message"].startswith("2 of 8 samples failed; last error:") and "attempt" not in detail["message"]


def test_samples_an_endpoint_fails_are_journaled_without_their_pictures(tmp_path):
    answerer = default_answerer(DATA, ACCURACY, SEED)
    with serve_in_thread(answerer, faults=FaultPlan({"500": 1.0}, seed=1)) as url:
        code, report, _ = run_eval(url.chat_url, tmp_path / "run", "--limit", "3", "--num-retry", "2", "--retry-time", "20")
    detail = mathvision(report)
    assert code != 0 and detail["status"] == "OOR" and "3 of 3 samples failed" in detail["message"]
    assert "failed after 2 attempt(s)" in detail["message"]
    journals = list((tmp_path / "run").rglob("*.jsonl"))
    assert journals
    for path in journals:
        text = path.read_text()
        assert "base64," not in text or "base64, " in text  # only the short description, "[image/jpeg base64, N chars…]"
        assert "/9j/" not in text  # the start of every base64 JPEG


def test_absent_data_is_a_clear_dataset_failure(model, tmp_path):
    url, _ = model
    (tmp_path / "data").mkdir()
    code, report, stderr = run_eval(url.chat_url, tmp_path / "run", "--data-dir", str(tmp_path / "data"))
    detail = mathvision(report)
    assert code != 0 and detail["status"] == "F"
    message = json.dumps(report) + stderr
    assert str(tmp_path / "data" / "mathvision" / "testmini.jsonl") in message
