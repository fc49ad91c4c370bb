"""lm-eval tasks on our engine score sample for sample as lm-evaluation-harness 0.4.13 scores the same
answers: generative tasks against lm-eval's own run over chat on the reference model; loglikelihood
tasks against lm-eval's own pipeline (process_results, aggregation) fed the same logprobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

pytest.importorskip("lm_eval")

from flageval.api import EvalInfo, Status
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.base import DatasetError
from flageval.datasets.lmeval.offline import local_data
from flageval.datasets.lmeval.task import task_manager
from flageval.engine.journal import Journal
from flageval.mock_model.answers_tasks import _TOKEN, TaskAnswerer
from flageval.mock_model.server import serve_in_thread
from flageval.runner import RunRequest, run

DATA = default_data_dir()
GENERATIVE = {"bbh_cot_fewshot": 2, "aime24": 8, "aime25": 8}  # name → documents per task
LOGLIKELIHOOD = {"arc_challenge": 25, "hellaswag": 25, "winogrande": 25, "truthfulqa_mc2": 25}


@pytest.fixture(scope="module")
def model():
    names = list(GENERATIVE) + list(LOGLIKELIHOOD)
    answerer = TaskAnswerer(DATA, names, accuracy=0.6, seed=11, limit=max((GENERATIVE | LOGLIKELIHOOD).values()))
    with serve_in_thread(answerer) as url:
        yield url, answerer


def ours(url: str, name: str, kind: str, limit: int, tmp: Path):
    endpoint = f"{url}/v1/chat/completions" if kind == "chat" else f"{url}/v1/completions"
    info = EvalInfo(eval_model="m", model="m", eval_url=endpoint, num_concurrent=4)
    result = asyncio.run(run(RunRequest(info, name, tmp, limit=limit, data_dir=DATA)))
    journal = Journal(tmp / name / "journal.jsonl")
    records = journal.records()
    journal.close()
    return result, records


def per_sample(records) -> dict[tuple[str, int, str], float]:
    out = {}
    for record in records:
        doc_id = int(record.id.rsplit("/", 1)[1])
        for key, value in {**record.scores, **(record.values or {})}.items():
            out[(record.group, doc_id, key)] = value
    return out


def lm_eval_per_sample(samples: dict) -> dict[tuple[str, int, str], float]:
    out = {}
    for task, rows in samples.items():
        for row in rows:
            for metric in row["metrics"]:
                value = row[metric]
                out[(task, row["doc_id"], f"{metric},{row['filter']}")] = value.tolist() if hasattr(value, "tolist") else value
    return out


def compare_results(name: str, ours_metrics: dict, theirs: dict) -> int:
    """Every metric lm-eval reports (tasks and groups) equals ours (ours in percent)."""
    compared = 0
    for row_name, row in theirs.items():
        prefix = "" if row_name == name or len(theirs) == 1 else f"{row_name}/"
        for key, value in row.items():
            if "," not in key or not isinstance(value, float):
                continue
            assert ours_metrics[prefix + key] == pytest.approx(100 * value, abs=1e-3), (row_name, key)
            compared += 1
    return compared


@pytest.mark.parametrize("name", list(GENERATIVE))
def test_generative_tasks_score_as_lm_eval_run_over_chat(model, name, tmp_path):
    import lm_eval

    url, answerer = model
    limit = GENERATIVE[name]
    result, records = ours(url, name, "chat", limit, tmp_path)
    assert result.status is Status.SUCCESS, result.message

    with local_data(DATA):
        theirs = lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args={"base_url": f"{url}/v1/chat/completions", "model": "m", "num_concurrent": 1},
            tasks=[name], apply_chat_template=True, limit=limit, log_samples=True, task_manager=task_manager())

    # the same messages were sent: lm-eval's request for each document equals ours
    prompts = {(r.group, int(r.id.rsplit("/", 1)[1])): r.prompt for r in records}
    for task, rows in theirs["samples"].items():
        for row in rows:
            context = row["arguments"][0][0]  # lm-eval's JsonChatStr: the messages as JSON
            assert json.loads(context[0]) == prompts[(task, row["doc_id"])]
    mine, reference = per_sample(records), lm_eval_per_sample(theirs["samples"])
    assert mine == reference
    right = [v for (_, _, key), v in mine.items() if key == next(iter(records[0].scores))]
    assert 0 < sum(right) < len(right)  # the answers were neither all right nor all wrong
    assert compare_results(name, result.metrics, theirs["results"]) >= 2
    assert result.accuracy == pytest.approx(answerer.intended(name, limit), abs=0.01)


class SameLogprobsLM:
    """lm-eval's side of the loglikelihood check: the reference model's echoed logprobs, read by lm-eval's
    own LocalCompletionsAPI.parse_logprobs (context length in the mock's tokens), everything after that
    lm-eval's evaluator."""

    def __new__(cls, url: str):
        from lm_eval.api.model import LM
        from lm_eval.models.openai_completions import LocalCompletionsAPI

        class _LM(LM):
            def loglikelihood(self, requests, disable_tqdm: bool = False):
                out = []
                with httpx.Client(timeout=30) as client:
                    for request in requests:
                        context, continuation = request.args
                        body = {"model": "m", "prompt": context + continuation, "max_tokens": 1, "temperature": 0,
                                "logprobs": 1, "echo": True, "seed": 1234}
                        data = client.post(f"{url}/v1/completions", json=body).json()
                        out += LocalCompletionsAPI.parse_logprobs(data, ctxlens=[len(_TOKEN.findall(context))])
                return out

            def generate_until(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

        return _LM()


@pytest.mark.parametrize("name", list(LOGLIKELIHOOD))
def test_loglikelihood_tasks_score_as_lm_eval_on_the_same_logprobs(model, name, tmp_path):
    import lm_eval

    url, answerer = model
    limit = LOGLIKELIHOOD[name]
    result, records = ours(url, name, "completions", limit, tmp_path)
    assert result.status is Status.SUCCESS, result.message
    with local_data(DATA):
        theirs = lm_eval.simple_evaluate(model=SameLogprobsLM(url), tasks=[name], limit=limit, log_samples=True,
                                         task_manager=task_manager())
    mine, reference = per_sample(records), lm_eval_per_sample(theirs["samples"])
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert mine[key] == pytest.approx(value, abs=1e-9), key
    assert compare_results(name, result.metrics, theirs["results"]) >= 2
    assert result.accuracy == pytest.approx(answerer.intended(name, limit), abs=0.01)


def test_a_loglikelihood_task_on_a_chat_endpoint_is_a_configuration_error():
    with pytest.raises(DatasetError, match="needs a completions endpoint"):
        get_dataset("winogrande", DATA, limit=2, kind="chat")


def test_a_missing_data_file_names_the_path(tmp_path):
    (tmp_path / "hf").mkdir()
    with pytest.raises(DatasetError, match=r"hf/allenai/ai2_arc/ARC-Challenge/test\.jsonl is missing"):
        get_dataset("arc_challenge", tmp_path, kind="completions")


def test_shots_asked_of_an_absent_pool_are_refused(tmp_path):
    folder = tmp_path / "hf" / "allenai" / "ai2_arc" / "ARC-Challenge"
    folder.mkdir(parents=True)
    for split in ("test", "validation"):
        (folder / f"{split}.jsonl").write_text((DATA / "hf/allenai/ai2_arc/ARC-Challenge" / f"{split}.jsonl").read_text())
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "arc_5shot.yaml").write_text("include: " + str(Path(__import__("lm_eval").__file__).parent /
                                             "tasks/arc/arc_challenge.yaml") + "\ntask: arc_5shot\nnum_fewshot: 5\n")
    with pytest.raises(DatasetError, match=r"5 few-shot examples from its train split.*train\.jsonl is absent"):
        get_dataset("arc_5shot", tmp_path, kind="completions", include_paths=[task_dir])
    assert get_dataset("arc_challenge", tmp_path, kind="completions").total() == 1172  # 0-shot runs without it


@pytest.mark.parametrize("name", ["arc_challenge", "hellaswag", "winogrande", "truthfulqa_mc2",
                                  "bbh_cot_fewshot_snarks", "aime24", "aime25"])
def test_documents_equal_those_of_the_datasets_json_loader(name):
    """Our reader of <data dir>/hf equals lm-eval's documented local route (dataset_path json + data_files)."""
    from lm_eval.api.task import ConfigurableTask

    dataset = get_dataset(name, DATA, kind="completions")
    task = dataset.tasks[name]
    config = {f.name: getattr(task.config, f.name) for f in dataclasses.fields(task.config)}
    folder = DATA / "hf" / task.config.dataset_path / (task.config.dataset_name or "default")
    files = {p.stem: str(p) for p in folder.glob("*.jsonl")}
    reference = ConfigurableTask(config={**config, "dataset_path": "json", "dataset_name": None,
                                         "dataset_kwargs": {"data_files": files}})
    assert [doc for _, doc in dataset.documents(name)] == list(reference.eval_docs)


def test_the_shipped_task_index_equals_a_scan_of_the_installed_lm_eval():
    from flageval.datasets.lmeval.index import builtin_names, scan_builtin

    assert builtin_names() == scan_builtin()
