"""lm-eval tasks through the operator on the real control plane: a built-in group and IFEval, and a task
of the user's own from a ConfigMap, each Evaluation Succeeded with the scores the model intended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.answers_tasks import TaskAnswerer
from flageval.mock_model.server import serve_in_thread
from kubernetes import client
from support.cluster import finished_status, results_claim

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
USER_TASKS = Path(__file__).parents[1] / "unit" / "user_tasks"
LIMIT = 3


def evaluation(name: str, url: str, **spec) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
            "spec": {"domain": "NLP", "limit": LIMIT, **spec, "evalInfos": [
                {"evalModel": f"{name}-nvidia-origin", "model": "qwen3", "evalUrl": url, "numConcurrent": 4}]}}


def test_lm_eval_tasks_and_a_config_map_task_succeed_with_the_intended_scores(control_plane, kube, namespace, start_operator):
    results_claim(kube, namespace)
    files = {p.name: p.read_text() for p in USER_TASKS.iterdir() if p.is_file()}
    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="capital-tasks"), data=files))
    start_operator(namespace)
    model = TaskAnswerer(DATA, ["bbh_cot_fewshot", "ifeval", "capitals"], 0.7, 5, fallback=default_answerer(DATA, 0.7, 5),
                         limit=LIMIT, include_paths=[USER_TASKS])
    with serve_in_thread(model) as url:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
            evaluation("harness", url.chat_url, datasets=["bbh_cot_fewshot", "ifeval"])))
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
            evaluation("own", url.chat_url, datasets=["capitals"], taskConfigMaps=["capital-tasks"])))
        harness = finished_status(kube, namespace, "harness")
        own = finished_status(kube, namespace, "own")

    assert harness["phase"] == "Succeeded", json.dumps(harness, indent=1)
    details = {d["dataset"]: d for d in harness["evalResults"][0]["details"]}
    assert details["bbh_cot_fewshot"]["status"] == details["ifeval"]["status"] == "S"
    assert details["bbh_cot_fewshot"]["progress"] == f"{27 * LIMIT}/{27 * LIMIT}"
    assert details["bbh_cot_fewshot"]["accuracy"] == pytest.approx(model.intended("bbh_cot_fewshot", LIMIT), abs=0.01)
    assert details["ifeval"]["accuracy"] == pytest.approx(model.intended("ifeval", LIMIT), abs=0.01)
    assert harness["progress"] == "2/2"

    assert own["phase"] == "Succeeded", json.dumps(own, indent=1)
    (capitals,) = own["evalResults"][0]["details"]
    assert capitals["status"] == "S" and capitals["progress"] == f"{LIMIT}/{LIMIT}"
    assert capitals["accuracy"] == pytest.approx(model.intended("capitals", LIMIT), abs=0.01)
    (job,) = kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=own").items
    command = job.spec.template.spec.containers[0].command
    assert command[command.index("--include-path") + 1] == "/etc/flageval/tasks/capital-tasks"
