"""Reports on Kubernetes: when an Evaluation finishes, the operator's report Job writes report.html beside its
results on the results volume, and `flageval serve --results-path` serves the report and the paired counts."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info
from support.cluster import results_claim, wait_for

pytestmark = pytest.mark.cluster
DATA = default_data_dir()
LIMIT = 20


def test_the_operator_writes_the_report_and_the_rest_api_serves_it(control_plane, kube, namespace, start_operator, start_shim):
    claim = results_claim(kube, namespace)
    volume = control_plane.agent_state / "claims" / namespace / claim  # what pods see at the claim's mount path
    start_operator(namespace)
    with (serve_in_thread(default_answerer(DATA, 0.7, 1)) as nvidia,
          serve_in_thread(default_answerer(DATA, 0.7, 2), seed=2, rephrase_rate=0.3) as ascend):
        shim = start_shim("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--limit", str(LIMIT),
                          "--results-path", str(volume))
        client = FlagEvalClient(shim.url)
        infos = [eval_info("q-nvidia-origin", "qwen", nvidia.chat_url, num_concurrent=4),
                 eval_info("q-ascend", "qwen", ascend.chat_url, num_concurrent=4, chip="Ascend-910B")]
        rid = client.call("POST", "/evaluation", {"eval_infos": infos, "domain": "NLP", "datasets": ["gsm8k"]})["request_id"]
        assert client.wait(rid, lambda a: a["finished"], timeout=300)["status"] == "S"

    uid = kube.custom.get_namespaced_custom_object("flageval.io", "v1alpha1", namespace, "evaluations", rid)["metadata"]["uid"]
    evaluation_dir = volume / "results" / namespace / f"{rid}-{uid[:8]}"
    report = wait_for(lambda: (evaluation_dir / "report.html").is_file() and evaluation_dir / "report.html", 120, "report.html")
    compared = json.loads(subprocess.run([sys.executable, "-m", "flageval.cli", "compare", str(evaluation_dir / "q-nvidia-origin"),
                                          str(evaluation_dir / "q-ascend"), "--json"], capture_output=True, text=True, check=True).stdout)
    (expected,) = compared["datasets"]
    text = report.read_text(encoding="utf-8")
    assert "Plotly" in text and text.count('class="flipped"') == len(expected["flipped"])
    assert "q-ascend (Ascend-910B)" in text and f"{namespace}/{rid}" in text
    def report_jobs():
        return kube.batch.list_namespaced_job(namespace, label_selector=f"flageval.io/report-of={rid}").items

    wait_for(lambda: all(j.status.succeeded == 1 for j in report_jobs()), 60, "the report Job to complete")
    assert len(report_jobs()) == 1

    # the REST API: the same counts (the status's, against the Evaluation's own baseline) and the page
    (_, entry) = client.evaluation_diffs([rid])["eval_diffs"]
    (detail,) = entry["details"]
    assert {k: detail[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")} == \
        {k: expected[k] for k in ("both_right", "right_to_wrong", "wrong_to_right", "both_wrong")}
    assert detail["p_value"] == round(expected["p_value"], 4)
    page = httpx.get(f"{shim.url}/report/{rid}", timeout=60)
    assert page.status_code == 200 and page.text.count('class="flipped"') == len(expected["flipped"])
