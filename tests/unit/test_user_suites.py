"""Users' own suites: a YAML file of {domain: {name: [datasets]}} that `--mode NAME` (CLI), `mode` (REST)
and `spec.mode` (Kubernetes, through FLAGEVAL_SUITES) name like the built-in ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flageval.datasets import (
    SUITES,
    SUITES_ENV,
    DatasetError,
    default_data_dir,
    suite,
    suites,
    user_suites,
)
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread

DATA = default_data_dir()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suites.yaml"
    path.write_text(text)
    return path


def test_a_users_suite_is_named_like_a_built_in_one(tmp_path, monkeypatch):
    path = write(tmp_path, "NLP:\n  parity: [gsm8k, arc_challenge, gsm8k]\nEV:\n  robots: [erqa]\n")
    assert user_suites(path) == {"NLP": {"parity": ["gsm8k", "arc_challenge"]}, "EV": {"robots": ["erqa"]}}
    assert suite("NLP", "parity", suites_file=path) == ["gsm8k", "arc_challenge"]
    assert suites("NLP", path) == {**SUITES["NLP"], "parity": ["gsm8k", "arc_challenge"]}
    # the operator and the REST API resolve spec.mode / mode through the file FLAGEVAL_SUITES names
    monkeypatch.setenv(SUITES_ENV, str(path))
    assert suite("EV", "robots") == ["erqa"]
    assert suite("NLP", "classic") == SUITES["NLP"]["classic"]
    with pytest.raises(DatasetError, match="unknown mode 'nope' for domain NLP; known: .*classic, parity"):
        suite("NLP", "nope")


def test_without_a_file_only_the_built_in_suites(monkeypatch):
    monkeypatch.delenv(SUITES_ENV, raising=False)
    assert user_suites() == {}
    assert suites("MM") == SUITES["MM"]


@pytest.mark.parametrize("text, reason", [
    ("NLP: [gsm8k]", "NLP must map suite names to lists of datasets"),
    ("XX:\n  a: [gsm8k]", "unknown domain 'XX'"),
    ("NLP:\n  classic: [gsm8k]", "NLP suite 'classic' is built in; give yours another name"),
    ("NLP:\n  empty: []", "NLP suite 'empty' must be a non-empty list of dataset names"),
    ("NLP:\n  odd: gsm8k", "NLP suite 'odd' must be a non-empty list of dataset names"),
    ("- gsm8k", "expected a mapping of domain"),
    ("NLP: {a: [gsm8k]", "suites file .*: while parsing"),
])
def test_a_wrong_suites_file_is_refused_naming_the_file_and_the_fault(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError, match=reason) as caught:
        user_suites(path)
    assert str(path) in str(caught.value)


def test_a_missing_suites_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="No such file"):
        user_suites(tmp_path / "absent.yaml")


def eval_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flageval.cli", "eval", "--url", url, "--model", "m", "--no-cache", "--json",
           "--limit", "3", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)


def test_the_cli_runs_the_suite_mode_names_from_the_suites_file(tmp_path):
    path = write(tmp_path, "NLP:\n  maths: [gsm8k]\n")
    with serve_in_thread(default_answerer(DATA, 0.7, 3)) as url:
        done = eval_cli(url.chat_url, "--suites", str(path), "--mode", "maths", "--output", str(tmp_path / "run"))
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert [d["dataset"] for d in report["details"]] == ["gsm8k"]
        assert report["details"][0]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 3, limit=3)

        refused = eval_cli(url.chat_url, "--suites", str(tmp_path / "absent.yaml"), "--mode", "maths")
        assert refused.returncode == 2
        assert "flageval: error: suites file" in refused.stderr and "absent.yaml" in refused.stderr
