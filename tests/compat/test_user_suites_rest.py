"""A user's suite named by the REST API's `mode`: `flageval serve` started with FLAGEVAL_SUITES runs the
suite's datasets, and an unknown mode is refused naming the suites there are."""

from __future__ import annotations

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info

DATA = default_data_dir()
LIMIT = 4


def test_the_rest_mode_names_a_users_suite(start_shim, tmp_path):
    suites = tmp_path / "suites.yaml"
    suites.write_text("NLP:\n  maths: [gsm8k]\n")
    with serve_in_thread(default_answerer(DATA, 0.7, 9)) as model:
        shim = start_shim("--limit", str(LIMIT), env={"FLAGEVAL_SUITES": str(suites)})
        client = FlagEvalClient(shim.url)
        started = client.evaluation([eval_info("m-nvidia-origin", "m", model.chat_url)], "NLP", mode="maths")
        rid = started["request_id"]
        final = client.wait_finished(rid)
        assert final["status"] == "S" and final["datasets_progress"] == "1/1"
        (result,) = client.evaldiffs(rid)["eval_results"]["m-nvidia-origin"]
        assert [(d["dataset"], d["status"]) for d in result["details"]] == [("gsm8k", "S")]
        assert result["details"][0]["accuracy"] == intended_accuracy("gsm8k", DATA, 0.7, 9, limit=LIMIT)

        refused = client.evaluation([eval_info("m-ascend", "m", model.chat_url)], "NLP", mode="algebra", check=False)
        assert refused["err_code"] == 1 and "algebra" in refused["err_msg"] and "maths" in refused["err_msg"]
