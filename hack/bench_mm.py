#!/usr/bin/env python3
"""MM benchmark: MathVision images encoded and sent by the engine against the instant reference model.

    .venv/bin/python hack/bench_mm.py [--concurrency 16] [--passes 1,3] [--data-dir ../shared/datasets]

For each number of passes over testmini (304 problems, one image each; pass k re-sends them under new
sample ids) a fresh client process runs the engine at num_concurrent=16 against the reference model
(a separate process that decodes every picture to check it), and reports images per second, request
megabytes per second and its peak RSS. Peak RSS that stays flat as the passes grow means images
stream: memory does not grow with the dataset. A last row times encoding alone (no HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def passes_of(dataset, passes: int):
    """The dataset's items, `passes` times over, each pass under its own ids."""
    for k in range(passes):
        for item in dataset.items("chat"):
            item.id = f"{item.id}#{k}"
            item.index += k * dataset.total()
            yield item


def client(url: str, data_dir: str, passes: int, concurrency: int) -> dict:
    from flageval.datasets import get_dataset
    from flageval.engine import Endpoint, Journal, run_dataset

    dataset = get_dataset("mathvision", Path(data_dir))
    rss_loaded = peak_rss_mb()
    sent = 0

    def counted():
        nonlocal sent
        for item in passes_of(dataset, passes):
            sent += sum(len(json.dumps(b)) for b in item.bodies)
            yield item

    endpoint = Endpoint(url=f"{url}/v1/chat/completions", model="mock", num_concurrent=concurrency)
    with tempfile.TemporaryDirectory() as work, Journal(Path(work) / "journal.jsonl") as journal:
        started = time.perf_counter()
        summary = asyncio.run(run_dataset(endpoint, counted(), dataset.score, journal, None, dataset="mathvision",
                                          total=dataset.total() * passes))
        elapsed = time.perf_counter() - started
        records = journal.records()
    n = passes * dataset.total()
    return {"images": n, "failed": summary.failed, "seconds": round(elapsed, 2),
            "images_per_s": round(n / elapsed, 1), "request_mb_per_s": round(sent / elapsed / 1e6, 1),
            "accuracy": dataset.aggregate(records).get("accuracy"), "rss_after_load_mb": round(rss_loaded, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def encode_only(data_dir: str, passes: int) -> dict:
    from flageval.datasets import get_dataset

    dataset = get_dataset("mathvision", Path(data_dir))
    started = time.perf_counter()
    n = sum(1 for _ in passes_of(dataset, passes))
    elapsed = time.perf_counter() - started
    return {"images": n, "seconds": round(elapsed, 2), "images_per_s": round(n / elapsed, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--passes", default="1,3", help="comma-separated numbers of passes over testmini")
    parser.add_argument("--data-dir", default=os.environ.get("FLAGEVAL_DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--role", choices=("client", "encode"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "client":
        print(json.dumps(client(args.url, args.data_dir, int(args.passes), args.concurrency)))
        return 0
    if args.role == "encode":
        print(json.dumps(encode_only(args.data_dir, int(args.passes))))
        return 0

    from flageval.mock_model.server import serve_in_subprocess

    passes = [int(p) for p in args.passes.split(",")]
    rows = []
    with serve_in_subprocess(["--data-dir", args.data_dir, "--accuracy", "0.8"]) as url:
        for count in passes:
            result = in_subprocess(["--role", "client", "--url", url, "--data-dir", args.data_dir,
                                    "--passes", str(count), "--concurrency", str(args.concurrency)])
            rows.append((f"engine → reference model, num_concurrent={args.concurrency}, {count} pass(es)", result))
    result = in_subprocess(["--role", "encode", "--data-dir", args.data_dir, "--passes", str(max(passes))])
    rows.append((f"encoding alone, {max(passes)} pass(es)", result))

    print(f"{'run':<58} {'images':>7} {'s':>7} {'img/s':>7} {'MB/s':>6} {'peak RSS MB':>12}")
    for name, r in rows:
        print(f"{name:<58} {r['images']:>7} {r['seconds']:>7} {r['images_per_s']:>7} "
              f"{r.get('request_mb_per_s', '—'):>6} {r['peak_rss_mb']:>12}")
    for name, r in rows:
        if "accuracy" in r:
            print(f"{name}: accuracy {r['accuracy']}, failed {r['failed']}, RSS after loading {r['rss_after_load_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
