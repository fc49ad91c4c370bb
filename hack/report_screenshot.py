"""The README's picture of `flageval report`: three reference "chips" evaluated on gsm8k, the report written,
and a screenshot taken in headless chromium (hack/browser installs it) with one flipped sample expanded.

    .venv/bin/python hack/report_screenshot.py [--out docs/report.png] [--limit 120]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import FaultPlan, serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
CHIPS = [  # name, chip, answer seed, server options
    ("qwen3-8b-nvidia-origin", "Nvidia-H100", 1, {"latency": 0.18, "latency_jitter": 0.04}),
    ("qwen3-8b-ascend", "Ascend-910B", 1, {"latency": 0.25, "latency_jitter": 0.10, "seed": 3, "rephrase_rate": 0.15,
                                            "truncate_rate": 0.05, "faults": FaultPlan({"503": 0.10}, seed=3, retry_after=0.01)}),
    ("qwen3-8b-metax", "MetaX-C500", 2, {"latency": 0.15, "latency_jitter": 0.03, "seed": 4, "rephrase_rate": 0.4}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    data = default_data_dir()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        runs = []
        for name, chip, seed, options in CHIPS:
            url = stack.enter_context(serve_in_thread(default_answerer(data, 0.75, seed), **options))
            out = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "flageval.cli", "eval", "--url", url.chat_url, "--model", "qwen3-8b",
                            "--eval-model", name, "--chip", chip, "--datasets", "gsm8k", "--limit", str(args.limit),
                            "--num-concurrent", "16", "--no-cache", "--output", str(out), "--json"],
                           check=True, stdout=subprocess.DEVNULL)
            runs.append(out)
        page_file = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-m", "flageval.cli", "report", *map(str, runs), "--out", str(page_file),
                        "--title", "Qwen3-8B on three chips (reference models)"], check=True)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.goto(page_file.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
            page.locator("details.flips > summary").first.click()
            page.locator("details.flips").first.locator("details.flipped > summary").first.click()
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    print(f"screenshot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
