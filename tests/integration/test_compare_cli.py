"""`flageval compare` and `flageval eval --details` against two reference models whose per-sample outcomes
are known in advance: the 2×2 table, the flipped samples and the identical responses are exactly the intended
ones, and the p-value is the exact McNemar on those counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flageval.api.results import pack_verdicts, sample_verdicts
from flageval.datasets import default_data_dir
from flageval.datasets.files import read_jsonl
from flageval.mock_model.answerer import intends_correct
from flageval.mock_model.answers import default_answerer, gsm8k_key
from flageval.mock_model.server import chosen, serve_in_thread
from flageval.results import read_samples, run_paths
from flageval.verdict import mcnemar_exact, paired_from_verdicts
from scipy.stats import binomtest

DATA = default_data_dir()
ACCURACY, SEED_A, SEED_B, LIMIT, REPHRASE = 0.7, 1, 2, 60, 0.3


def flageval(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flageval.cli", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def intended() -> dict:
    """What the two models mean to answer on the first LIMIT gsm8k questions."""
    keys = [gsm8k_key(d["question"]) for d in read_jsonl(DATA / "gsm8k" / "test.jsonl", ("question",))[:LIMIT]]
    a = [intends_correct(k, ACCURACY, SEED_A) for k in keys]
    b = [intends_correct(k, ACCURACY, SEED_B) for k in keys]
    rephrased = [chosen(SEED_B, "rephrase", k, REPHRASE) for k in keys]
    same = [x == y for x, y in zip(a, b)]
    return {
        "both_right": sum(x and y for x, y in zip(a, b)),
        "right_to_wrong": sum(x and not y for x, y in zip(a, b)),
        "wrong_to_right": sum(y and not x for x, y in zip(a, b)),
        "both_wrong": sum(not x and not y for x, y in zip(a, b)),
        "flipped": {f"gsm8k/{i}": "right→wrong" if a[i] else "wrong→right" for i in range(LIMIT) if not same[i]},
        # B's wording differs only where it rephrased; a flipped sample's answer differs anyway
        "identical": sum(s and not r for s, r in zip(same, rephrased)),
        "same_verdict_different_text": sum(s and r for s, r in zip(same, rephrased)),
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("compare")
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED_A)) as a, \
            serve_in_thread(default_answerer(DATA, ACCURACY, SEED_B), seed=SEED_B, rephrase_rate=REPHRASE) as b:
        for url, name, out in ((a, "q-nvidia-origin", work / "nvidia"), (b, "q-ascend", work / "ascend")):
            proc = flageval("eval", "--url", url.chat_url, "--model", "qwen", "--eval-model", name, "--datasets", "gsm8k",
                            "--limit", str(LIMIT), "--num-concurrent", "8", "--no-cache", "--output", str(out), "--json")
            assert proc.returncode == 0, proc.stderr
    return work / "nvidia", work / "ascend"


def test_counts_flipped_samples_and_p_value_are_the_intended_ones(two_runs):
    base, other = two_runs
    proc = flageval("compare", str(base), str(other), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["baseline"].startswith("q-nvidia-origin") and report["run"].startswith("q-ascend")
    (d,) = report["datasets"]
    want = intended()
    got = {k: d[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")}
    assert got == {k: want[k] for k in got}
    assert want["right_to_wrong"] + want["wrong_to_right"] > 0  # the seeds do disagree somewhere
    assert {s["id"]: s["direction"] for s in d["flipped"]} == want["flipped"]
    assert d["paired"] == LIMIT and d["unpaired"] == 0
    # the exact McNemar on the counts: our binomial sum and scipy's exact binomial test agree
    assert d["p_value"] == mcnemar_exact(want["right_to_wrong"], want["wrong_to_right"])
    n = want["right_to_wrong"] + want["wrong_to_right"]
    assert d["p_value"] == pytest.approx(binomtest(want["right_to_wrong"], n, 0.5).pvalue, rel=1e-9)
    # the same p-value the operator's status computes from the runs' packed verdicts
    packed = [pack_verdicts(sample_verdicts(list(read_samples(run_paths(run, "gsm8k"))), LIMIT)) for run in two_runs]
    assert paired_from_verdicts(*packed).p_value == d["p_value"]
    # word-for-word agreement: only where B rephrased (same verdict) or flipped does the text differ
    assert d["identical_responses"] == want["identical"]
    assert d["same_verdict_different_text"] == want["same_verdict_different_text"] > 0
    assert d["agreement_rate"] == round(100 * want["identical"] / LIMIT, 2)
    # each flipped sample carries both responses, both extractions and the target
    sample = d["flipped"][0]
    assert sample["prompt"] and sample["target"] and sample["response"] != sample["baseline_response"]
    assert sample["extracted"] != sample["baseline_extracted"]


def test_table_lists_the_counts_and_flipped_samples(two_runs):
    proc = flageval("compare", *map(str, two_runs), "--samples", "3")
    assert proc.returncode == 0, proc.stderr
    want = intended()
    row = next(line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("gsm8k"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1:6] == [str(LIMIT), str(want["both_right"]), str(want["right_to_wrong"]), str(want["wrong_to_right"]),
                          str(want["both_wrong"])]
    assert f"{len(want['flipped'])} flipped sample(s), first 3" in proc.stdout


def test_compare_refuses_a_directory_without_results(tmp_path, two_runs):
    proc = flageval("compare", str(tmp_path), str(two_runs[1]))
    assert proc.returncode == 2 and "holds no results" in proc.stderr


def test_eval_details_prints_the_serving_figures(tmp_path):
    with serve_in_thread(default_answerer(DATA, ACCURACY, SEED_A), latency=0.02, truncate_rate=0.2, seed=3) as url:
        proc = flageval("eval", "--url", url.chat_url, "--model", "qwen", "--datasets", "gsm8k", "--limit", "30",
                        "--num-concurrent", "4", "--no-cache", "--output", str(tmp_path / "out"), "--details")
        truncated = url.stats()["truncated"]
    assert "serving" in proc.stdout and "p50 ms" in proc.stdout
    result = json.loads((tmp_path / "out" / "gsm8k" / "result.json").read_text())
    serving = result["serving"]
    assert serving["requests"] == 30 and serving["truncated"] == truncated > 0
    assert f"{truncated} ({serving['truncated_percent']:.1f}%)" in proc.stdout
    assert serving["usage_reported"] == 30 and serving["latency_p50_ms"] >= 20
    # the runner's metrics, kept beside the result, say the same
    metrics = (tmp_path / "out" / "gsm8k" / "metrics.prom").read_text()
    assert f'flageval_engine_answers_total{{finish_reason="length"}} {float(truncated)}' in metrics
    assert f'flageval_engine_answers_total{{finish_reason="stop"}} {float(30 - truncated)}' in metrics
    assert "flageval_engine_output_tokens_total" in metrics
