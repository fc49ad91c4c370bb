"""A FlagEval client drives `flageval serve` (local backend) through a whole cycle against reference models:
start, follow, stop and resume mid-run, read the results, compare evaluations. Every figure is checked
against what the runner wrote and what the reference model meant to score."""

from __future__ import annotations

import json
import stat
import time
import uuid

from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from flageval_client import FlagEvalClient, eval_info, ratio

DATA = default_data_dir()
ACCURACY = 0.7
LIMIT = 8  # gsm8k: 8 samples; mmlu: 8 per subject (456)
SAMPLES = LIMIT + 57 * LIMIT
CONCURRENT = 2


def runner_result(state_dir, request_id: str, eval_model: str, dataset: str) -> dict:
    return json.loads((state_dir / "evaluations" / request_id / "results" / eval_model / dataset / "result.json").read_text())


def assert_sent_once(stats: dict, allowance: int) -> None:
    """Every sample asked; none asked again, except requests in flight when a run was stopped (they were
    never answered to the runner, so it asks once more)."""
    counts = stats["by_key"]
    assert "unknown" not in counts, "the model received a request it could not recognise"
    assert len(counts) == SAMPLES
    repeated = sum(counts.values()) - len(counts)
    assert max(counts.values()) <= 2 and repeated <= allowance, (repeated, allowance)


def test_two_services_full_cycle_with_stop_and_resume(start_shim):
    secret = f"sk-compat-{uuid.uuid4().hex}"
    with (serve_in_thread(default_answerer(DATA, ACCURACY, 5), latency=0.02) as nvidia,
          serve_in_thread(default_answerer(DATA, ACCURACY, 6), latency=0.02) as ascend,
          serve_in_thread(default_answerer(DATA, ACCURACY, 7), latency=0.01) as kunlun):
        shim = start_shim("--limit", str(LIMIT), "--parallel-datasets", "2", "--max-runs", "4")
        client = FlagEvalClient(shim.url)
        infos = [
            eval_info("qwen3-8b-nvidia-origin", "qwen3-8b", nvidia.chat_url, api_key=secret, num_concurrent=CONCURRENT),
            eval_info("qwen3-8b-ascend", "qwen3-8b", ascend.chat_url, api_key=secret, num_concurrent=CONCURRENT, chip="Ascend-910B"),
        ]
        started = client.evaluation(infos, "NLP", user_id="compat", special_event="release-check")
        rid = started["request_id"]
        assert isinstance(rid, str) and rid
        assert [t["eval_model"] for t in started["eval_tasks"]] == ["qwen3-8b-nvidia-origin", "qwen3-8b-ascend"]
        assert len({t["task_id"] for t in started["eval_tasks"]}) == 2
        assert all(t["status"] in ("P", "R") for t in started["eval_tasks"])

        # In the middle of mmlu: stop.
        def mid_mmlu(answer):
            return answer["running_dataset"] == "mmlu" and 40 <= ratio(answer["running_progress"])[0] <= 57 * LIMIT // 2

        running = client.wait(rid, mid_mmlu)
        assert running["status"] == "R" and not running["finished"]
        assert running["datasets_progress"].endswith("/4")
        client.stop_evaluation(rid)
        stopped = client.wait(rid, lambda a: a["status"] == "C", timeout=30)
        assert not stopped["finished"]
        assert stopped["running_dataset"] == "mmlu"  # where it stopped
        done, total = ratio(stopped["running_progress"])
        assert 0 < done < total == 57 * LIMIT
        asked = nvidia.stats()["total"] + ascend.stats()["total"]
        time.sleep(1.5)
        assert client.evaluation_progress(rid) == stopped  # nothing moves while stopped
        assert nvidia.stats()["total"] + ascend.stats()["total"] == asked
        assert client.stop_evaluation(rid)["err_code"] == 0  # stopping twice is harmless
        not_ready = client.evaldiffs(rid, check=False)
        assert not_ready["err_code"] == 1 and "stopped" in not_ready["err_msg"]

        client.resume_evaluation(rid)
        final = client.wait_finished(rid)
        assert final == {**final, "err_code": 0, "finished": True, "status": "S", "datasets_progress": "4/4"}
        # Two datasets per service were running when stopped, each with CONCURRENT requests in flight.
        assert_sent_once(nvidia.stats(), allowance=2 * CONCURRENT)
        assert_sent_once(ascend.stats(), allowance=2 * CONCURRENT)

        # /evaldiffs: per dataset status, accuracy (the runner's figure, the one the model intended) and diff.
        results = client.evaldiffs(rid)["eval_results"]
        assert client.call("GET", "/evaldiffs", params={"request_id": rid})["eval_results"] == results
        assert set(results) == {"qwen3-8b-nvidia-origin", "qwen3-8b-ascend"}
        expected = {}
        for name, seed in (("qwen3-8b-nvidia-origin", 5), ("qwen3-8b-ascend", 6), ("qwen3-8b-kunlun", 7)):
            expected[name] = {ds: intended_accuracy(ds, DATA, ACCURACY, seed, LIMIT) for ds in ("gsm8k", "mmlu")}
        for name, entries in results.items():
            (entry,) = entries
            assert entry["status"] == "S"
            assert [d["dataset"] for d in entry["details"]] == ["gsm8k", "mmlu"]
            for detail in entry["details"]:
                ds = detail["dataset"]
                assert detail["status"] == "S"
                assert detail["accuracy"] == runner_result(shim.state_dir, rid, name, ds)["accuracy"] == expected[name][ds]
                base = expected["qwen3-8b-nvidia-origin"][ds]
                assert detail["diff"] == round(expected[name][ds] - base, 2)
        ascend_diffs = [d["diff"] for d in results["qwen3-8b-ascend"][0]["details"]]
        assert any(d != 0 for d in ascend_diffs)
        assert results["qwen3-8b-nvidia-origin"][0]["release"] is True
        assert results["qwen3-8b-ascend"][0]["release"] is all(abs(d) < 0.5 for d in ascend_diffs)

        # A second evaluation, one service on a third chip: diffs against the finished baseline.
        rid2 = client.evaluation([eval_info("qwen3-8b-kunlun", "qwen3-8b", kunlun.chat_url, api_key=secret, num_concurrent=4,
                                            chip="Kunlunxin-P800")], "NLP")["request_id"]
        assert rid2 != rid
        assert client.wait_finished(rid2)["status"] == "S"
        assert_sent_once(kunlun.stats(), allowance=0)
        (kunlun_entry,) = client.evaldiffs(rid2)["eval_results"]["qwen3-8b-kunlun"]
        for detail in kunlun_entry["details"]:
            ds = detail["dataset"]
            assert detail["accuracy"] == expected["qwen3-8b-kunlun"][ds]
            assert detail["diff"] == round(expected["qwen3-8b-kunlun"][ds] - expected["qwen3-8b-nvidia-origin"][ds], 2)

        # /evaluation_diffs: the '-nvidia-origin' service is the baseline wherever it is in the list.
        diffs = client.evaluation_diffs([rid2, rid])["eval_diffs"]
        assert client.call("GET", "/evaluation_diffs", {"request_ids": [rid2, rid]})["eval_diffs"] == diffs
        assert [d["request_id"] for d in diffs] == [rid2, rid, rid]
        for entry in diffs:
            name = entry["eval_model"]
            for detail in entry["details"]:
                ds = detail["dataset"]
                base = expected["qwen3-8b-nvidia-origin"][ds]
                documented = {k: detail[k] for k in ("dataset", "base_acc", "accuracy", "diff")}
                assert documented == {"dataset": ds, "base_acc": base, "accuracy": expected[name][ds], "diff": round(expected[name][ds] - base, 2)}
                paired = name != "qwen3-8b-nvidia-origin"  # extensions: the paired counts against the baseline
                assert (detail["p_value"] is not None) is paired and (detail["both_right"] is not None) is paired
            assert entry["release"] is all(abs(d["diff"]) < 0.5 for d in entry["details"])
        # Without a marked baseline, the first request_id is the baseline.
        (alone,) = client.evaluation_diffs([rid2])["eval_diffs"]
        assert all(d["diff"] == 0 and d["base_acc"] == d["accuracy"] for d in alone["details"]) and alone["release"] is True

        # Finished: nothing to stop or resume.
        assert client.stop_evaluation(rid, check=False)["err_code"] == 1
        assert client.resume_evaluation(rid, check=False)["err_code"] == 1
        client.close()
        shim.stop()

    # The key went to the model services and nowhere else.
    assert not any(secret in text for text in client.transcript)
    assert secret not in shim.log()
    keys = list(shim.state_dir.glob("evaluations/*/api_keys.json"))
    assert len(keys) == 2 and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    for path in shim.state_dir.rglob("*"):
        if path.is_file() and path.name != "api_keys.json":
            assert secret.encode() not in path.read_bytes(), path
