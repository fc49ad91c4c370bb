"""`flageval serve` (local backend): /evaluation_diffs keeps its documented fields and adds the paired counts,
the p-value and serving figures; /evaldiffs adds serving figures; /report/{request_id} serves the HTML report."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval_client import FlagEvalClient, eval_info

DATA = default_data_dir()
LIMIT = 30


def test_diffs_carry_paired_counts_and_serving_figures_and_the_report_is_served(start_shim):
    with (serve_in_thread(default_answerer(DATA, 0.7, 1)) as nvidia,
          serve_in_thread(default_answerer(DATA, 0.7, 2), seed=2, truncate_rate=0.1,
                          faults=FaultPlan({"503": 0.1}, seed=2, retry_after=0.01)) as ascend):
        shim = start_shim("--limit", str(LIMIT))
        client = FlagEvalClient(shim.url)
        infos = [eval_info("q-nvidia-origin", "qwen", nvidia.chat_url, num_concurrent=4),
                 eval_info("q-ascend", "qwen", ascend.chat_url, num_concurrent=4, chip="Ascend-910B")]
        rid = client.call("POST", "/evaluation", {"eval_infos": infos, "domain": "NLP", "datasets": ["gsm8k"]})["request_id"]
        client.wait_finished(rid)
        ascend_stats = ascend.stats()

    results = shim.state_dir / "evaluations" / rid / "results"
    compared = subprocess.run([sys.executable, "-m", "flageval.cli", "compare", str(results / "q-nvidia-origin"),
                               str(results / "q-ascend"), "--json"], capture_output=True, text=True, check=True)
    (expected,) = json.loads(compared.stdout)["datasets"]

    diffs = client.evaluation_diffs([rid])
    base_entry, entry = diffs["eval_diffs"]
    (detail,) = entry["details"]
    assert {"dataset", "base_acc", "accuracy", "diff"} <= detail.keys()  # the documented fields stay
    assert {k: detail[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")} == \
        {k: expected[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")}
    assert detail["p_value"] == round(expected["p_value"], 4)
    assert base_entry["details"][0]["p_value"] is None  # the baseline is not paired with itself
    serving = detail["serving"]
    assert serving["retries"] == ascend_stats["faults"]["503"] and serving["errors"] == ascend_stats["faults"]["503"]
    assert serving["truncated_percent"] == round(100 * ascend_stats["truncated"] / LIMIT, 2)
    assert serving["latency_p50_ms"] is not None

    evaldiffs = client.evaldiffs(rid)
    assert evaldiffs["eval_results"]["q-ascend"][0]["details"][0]["serving"] == serving

    page = httpx.get(f"{shim.url}/report/{rid}", timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Plotly" in page.text and 'class="disagreement"' in page.text and "q-ascend (Ascend-910B)" in page.text
    assert page.text.count('class="flipped"') == len(expected["flipped"])
    missing = httpx.get(f"{shim.url}/report/eval-000000000000", timeout=30)
    assert missing.status_code == 404 and "unknown request_id" in missing.text


def test_the_report_needs_the_token_when_the_server_has_one(start_shim):
    shim = start_shim("--token", "report-token-123")
    unknown = f"{shim.url}/report/eval-000000000000"
    assert httpx.get(unknown, timeout=30).status_code == 401  # prompts and answers are not public
    answer = httpx.get(unknown, headers={"Authorization": "Bearer report-token-123"}, timeout=30)
    assert answer.status_code == 404 and "unknown request_id" in answer.text
