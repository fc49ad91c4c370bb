"""A user's suite through the operator on the real control plane: the operator started with FLAGEVAL_SUITES
turns an Evaluation's spec.mode into the suite's datasets (a native one and an lm-eval task), each run by its
own Job to the score the model intended; a mode that is no suite fails the Evaluation naming it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.answers_tasks import TaskAnswerer
from flageval.mock_model.server import serve_in_thread
from support.cluster import finished_status, results_claim

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
LIMIT = 3


def evaluation(name: str, url: str, mode: str) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
            "spec": {"domain": "NLP", "mode": mode, "limit": LIMIT, "evalInfos": [
                {"evalModel": f"{name}-nvidia-origin", "model": "qwen3", "evalUrl": url, "numConcurrent": 4}]}}


def test_spec_mode_names_a_users_suite(control_plane, kube, namespace, start_operator, tmp_path):
    results_claim(kube, namespace)
    suites = tmp_path / "suites.yaml"
    suites.write_text("NLP:\n  parity: [gsm8k, bbh_cot_fewshot_snarks]\n")
    start_operator(namespace, suites=str(suites))
    model = TaskAnswerer(DATA, ["bbh_cot_fewshot_snarks"], 0.7, 5, fallback=default_answerer(DATA, 0.7, 5), limit=LIMIT)
    with serve_in_thread(model) as url:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(evaluation("mine", url.chat_url, "parity")))
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(evaluation("typo", url.chat_url, "parrity")))
        mine = finished_status(kube, namespace, "mine")
        typo = finished_status(kube, namespace, "typo")

    assert mine["phase"] == "Succeeded", json.dumps(mine, indent=1)
    details = {d["dataset"]: d for d in mine["evalResults"][0]["details"]}
    assert set(details) == {"gsm8k", "bbh_cot_fewshot_snarks"}
    assert details["gsm8k"]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 5, limit=LIMIT)
    assert details["bbh_cot_fewshot_snarks"]["accuracy"] == pytest.approx(model.intended("bbh_cot_fewshot_snarks", LIMIT), abs=0.01)
    assert len(kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=mine").items) == 2

    assert typo["phase"] == "Failed"
    assert "parrity" in json.dumps(typo) and "parity" in json.dumps(typo).replace("parrity", "")
