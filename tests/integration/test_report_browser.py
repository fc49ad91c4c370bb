"""`flageval report` in a real browser: Debian's headless chromium (hack/browser installs it) driven by Playwright.

The page loads with no console error and fetches nothing from the network, each chart draws its marks, and
expanding a flipped sample shows both responses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import FaultPlan, serve_in_thread

DATA = default_data_dir()
CHROMIUM = os.environ.get("FLAGEVAL_CHROMIUM", "/usr/bin/chromium")
LIMIT = 40


def flageval(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flageval.cli", *args], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("report")
    with serve_in_thread(default_answerer(DATA, 0.7, 1), latency=0.01, latency_jitter=0.01) as a, \
            serve_in_thread(default_answerer(DATA, 0.7, 2), latency=0.03, latency_jitter=0.02, seed=2, truncate_rate=0.1,
                            rephrase_rate=0.2, faults=FaultPlan({"503": 0.1}, seed=2, retry_after=0.01)) as b:
        for url, name, chip, out in ((a, "q-nvidia-origin", "Nvidia-H100", work / "nvidia"), (b, "q-ascend", "Ascend-910B", work / "ascend")):
            flageval("eval", "--url", url.chat_url, "--model", "qwen", "--eval-model", name, "--chip", chip, "--datasets", "gsm8k",
                     "--limit", str(LIMIT), "--num-concurrent", "8", "--no-cache", "--output", str(out), "--json")
    page = work / "report.html"
    flageval("report", str(work / "nvidia"), str(work / "ascend"), "--out", str(page))
    compared = json.loads(flageval("compare", str(work / "nvidia"), str(work / "ascend"), "--json").stdout)
    return page, compared


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run hack/browser (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


def test_report_renders_its_charts_offline_and_expands_samples(report, browser):
    path, compared = report
    text = path.read_text(encoding="utf-8")
    assert "<script src=" not in text and "<link" not in text  # every asset inline
    page = browser.new_page()
    problems: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def only_the_file(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_file)
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=30_000)
    # accuracy, latency, rates: each draws marks (points with error bars, boxes, bars)
    charts = page.eval_on_selector_all(
        ".js-plotly-plot", "els => els.map(e => ({id: e.id, marks: e.querySelectorAll('.point, path.box').length}))")
    assert [c["id"] for c in charts] == ["acc-0", "lat-0", "rates-0"]
    assert all(c["marks"] > 0 for c in charts), charts
    assert page.eval_on_selector("#lat-0", "e => e.querySelectorAll('path.box').length") == 2  # one box per chip
    assert page.eval_on_selector("#acc-0", "e => e.querySelectorAll('.errorbar').length") >= 1

    # the disagreement table says what flageval compare says
    (d,) = compared["datasets"]
    cells = page.eval_on_selector_all("table.disagreement tr:nth-child(2) td", "tds => tds.map(t => t.textContent)")
    assert cells[:5] == [str(d[k]) for k in ("paired", "both_right", "right_to_wrong", "wrong_to_right", "both_wrong")]
    assert page.locator("details.flipped").count() == len(d["flipped"]) > 0

    # expanding a flipped sample shows both responses
    first = d["flipped"][0]
    sample = page.locator(f'details.flipped[data-sample="{first["id"]}"]')
    assert not sample.locator("pre.response.run").is_visible()
    page.locator("details.flips > summary").first.click()  # the chip's list, then the sample
    assert sample.is_visible() and not sample.locator("pre.response.run").is_visible()
    sample.locator("summary").click()
    assert sample.locator("pre.response.baseline").is_visible() and sample.locator("pre.response.run").is_visible()
    assert sample.locator("pre.response.baseline").inner_text() == first["baseline_response"]
    assert sample.locator("pre.response.run").inner_text() == first["response"]

    assert problems == [] and fetched == []
    page.close()
