#!/usr/bin/env python3
"""`make demo`: two reference model services (an NVIDIA baseline and another chip), evaluated on gsm8k
and an MMLU subset with `flageval eval`, then the other chip compared against the baseline: the verdict,
the sample-level disagreements (`flageval compare`) and the HTML report (`.demo/report.html`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from flageval.datasets import default_data_dir

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
FLAGEVAL = [sys.executable, "-m", "flageval.cli"]
DATASETS = "gsm8k,mmlu"
LIMIT = "100"  # gsm8k: first 100 questions; mmlu: first 100 of each subject's order, as lm-eval's --limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_model(seed: int, accuracy: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [*FLAGEVAL, "mock-model", "--port", str(port), "--data-dir", str(default_data_dir()), "--accuracy", str(accuracy), "--seed", str(seed), "--latency", "0.01"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return proc, f"{base}/chat/completions"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit("the reference model server did not start")
        time.sleep(0.1)
    sys.exit("the reference model server did not answer")


def evaluate(url: str, eval_model: str, chip: str, *extra: str) -> int:
    print(f"\n== {eval_model} on {chip} ==", flush=True)
    return subprocess.call(
        [
            *FLAGEVAL, "eval", "--url", url, "--model", "Qwen3-8B", "--eval-model", eval_model, "--chip", chip,
            "--datasets", DATASETS, "--limit", LIMIT, "--num-concurrent", "16",
            "--output", str(WORK / eval_model), "--cache-dir", str(WORK / "cache"), *extra,
        ]
    )


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    # Same seed = the same answers: a chip that matches the baseline. Another seed flips ~1 answer in 3.
    baseline, baseline_url = start_model(seed=0, accuracy=0.8)
    other, other_url = start_model(seed=7, accuracy=0.8)
    try:
        evaluate(baseline_url, "qwen3-8b-nvidia-origin", "Nvidia-H100")
        code = evaluate(other_url, "qwen3-8b-ascend", "Ascend-910B", "--baseline", str(WORK / "qwen3-8b-nvidia-origin"))
        print(f"\n`flageval eval` exit code for the compared chip: {code} (0 only when every dataset succeeded)")
        runs = [str(WORK / "qwen3-8b-nvidia-origin"), str(WORK / "qwen3-8b-ascend")]
        print("\n== where the two disagree: flageval compare ==", flush=True)
        subprocess.run([*FLAGEVAL, "compare", *runs, "--samples", "5"], check=False)
        subprocess.run([*FLAGEVAL, "report", *runs, "--out", str(WORK / "report.html")], check=False)
        return 0
    finally:
        for proc in (baseline, other):
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
