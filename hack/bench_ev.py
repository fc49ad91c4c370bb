#!/usr/bin/env python3
"""EV benchmark: loading an ERQA-sized TFRecord with our reader, beside the floor of reading it.

    .venv/bin/python hack/bench_ev.py [--records 400] [--picture-kb 150] [--pictures 2]

Writes a synthetic file of tf.train.Examples (question, answer, question_type, visual_indices and
`--pictures` encoded pictures of random bytes each), then times, best of three:
  - flageval: `records()` (both CRCs checked) + `parse_example()` of every record, as `erqa` loads;
  - floor: reading the same file in 1 MiB chunks and computing one CRC-32C over it (no framing, no parse).
Prints records/s and MB/s of each and the peak RSS of the process (pictures are never all held).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--picture-kb", type=int, default=150)
    parser.add_argument("--pictures", type=int, default=2)
    args = parser.parse_args()

    import google_crc32c
    from flageval.datasets.tfrecord import frame, parse_example, records
    from support.ev_fixtures import encode_example

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tfrecord"
        with open(path, "wb") as out:  # one record at a time: the writing holds no more than the reading
            out.writelines(frame(encode_example({
                    "question": ["Which object is closest to the gripper? Choices: A. cup B. pen C. ball D. box"],
                    "answer": ["B"], "question_type": ["Spatial Reasoning"], "visual_indices": [0] * args.pictures,
                    "image/encoded": [os.urandom(args.picture_kb * 1024) for _ in range(args.pictures)]})) for _ in range(args.records))
        size_mb = path.stat().st_size / 1e6

        def ours() -> None:
            n = 0
            for _, data in records(path):
                n += len(parse_example(data)["image/encoded"])
            assert n == args.records * args.pictures

        def floor() -> None:
            crc = 0
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    crc = google_crc32c.extend(crc, chunk)

        ours_s, floor_s = best_of(3, ours), best_of(3, floor)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file: {args.records} records, {args.pictures} × {args.picture_kb} KB pictures each, {size_mb:.1f} MB")
    print(f"{'reader':<34}{'records/s':>12}{'MB/s':>10}")
    print(f"{'flageval records + parse_example':<34}{args.records / ours_s:>12,.0f}{size_mb / ours_s:>10,.0f}")
    print(f"{'floor: read + one CRC-32C':<34}{args.records / floor_s:>12,.0f}{size_mb / floor_s:>10,.0f}")
    print(f"peak RSS {rss:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
