"""Regenerate operator/flageval/datasets/lmeval/index.json.gz: lm-eval's task index, name → (kind, YAML, tags).

lm-eval's TaskManager parses every one of its ~9,000 YAML files to find a name (about 10 s of CPU);
the runner reads this file instead. Run after changing the pinned lm-eval version; the tests check
that the file equals a fresh scan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from flageval.datasets.lmeval.index import INDEX_FILE, encode, scan_builtin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file differs from a fresh scan")
    args = parser.parse_args()
    fresh = encode(scan_builtin())
    if args.check:
        same = INDEX_FILE.exists() and INDEX_FILE.read_bytes() == fresh
        print("index up to date" if same else f"{INDEX_FILE} differs from lm-eval's tasks: regenerate it")
        return 0 if same else 1
    INDEX_FILE.write_bytes(fresh)
    print(f"wrote {INDEX_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
