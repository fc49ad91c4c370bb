"""Users' own lm-eval task YAML (include, !function helpers, Jinja, a group) from an include path: scored
as lm-eval 0.4.13 scores them, and a broken file or template is that dataset's failure, naming it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from flageval.api import EvalInfo, Status
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.base import DatasetError
from flageval.datasets.lmeval.task import task_manager
from flageval.engine.journal import Journal
from flageval.mock_model.answers_tasks import TaskAnswerer
from flageval.mock_model.server import serve_in_thread
from flageval.runner import RunRequest, run
from test_lmeval_fidelity import compare_results, lm_eval_per_sample, per_sample

TASKS = Path(__file__).with_name("user_tasks")
DATA = default_data_dir()


@pytest.fixture
def in_tasks_dir(monkeypatch):
    monkeypatch.chdir(TASKS)  # the tasks' data_files are relative, read as given (lm-eval's rule)


@pytest.mark.parametrize("name", ["capitals", "capitals_all"])
def test_a_user_task_and_group_score_as_lm_eval_runs_them(in_tasks_dir, name, tmp_path):
    import lm_eval

    answerer = TaskAnswerer(DATA, [name], accuracy=0.5, seed=2, include_paths=[TASKS])
    with serve_in_thread(answerer) as url:
        info = EvalInfo(eval_model="m", model="m", eval_url=url.chat_url, num_concurrent=4)
        result = asyncio.run(run(RunRequest(info, name, tmp_path, data_dir=DATA, include_paths=(TASKS,))))
        assert result.status is Status.SUCCESS, result.message
        theirs = lm_eval.simple_evaluate(
            model="local-chat-completions", model_args={"base_url": url.chat_url, "model": "m", "num_concurrent": 1},
            tasks=[name], apply_chat_template=True, log_samples=True, task_manager=task_manager([TASKS]))
    journal = Journal(tmp_path / name / "journal.jsonl")
    records = journal.records()
    journal.close()
    assert per_sample(records) == lm_eval_per_sample(theirs["samples"])
    assert compare_results(name, result.metrics, theirs["results"]) >= 2
    assert result.accuracy == pytest.approx(answerer.intended(name), abs=0.01)
    assert 0 < result.accuracy < 100
    first = next(r.prompt for r in records if r.group == "capitals" and r.id.endswith("/0"))
    assert first[0] == {"role": "system", "content": "Answer with the name of the city only.\n\n"}
    # the helper builds the text; first_n takes the first documents, leaving out the one asked
    assert first[1] == {"role": "user", "content": "Country: Japan\nCapital:"}
    assert first[-1] == {"role": "user", "content": "Country: France\nCapital:"}


def broken_copy(tmp_path: Path, file: str, text: str) -> Path:
    folder = tmp_path / "tasks"
    shutil.copytree(TASKS, folder)
    (folder / file).write_text(text)
    return folder


def test_a_bad_yaml_file_is_named_with_its_line(in_tasks_dir, tmp_path):
    folder = broken_copy(tmp_path, "capitals.yaml", "include: _capitals_base.yaml\ntask: capitals\n  doc_to_text: [\n")
    with pytest.raises(DatasetError) as caught:
        get_dataset("capitals", DATA, include_paths=[folder])
    assert "capitals.yaml" in str(caught.value) and "line 3" in str(caught.value)
    assert get_dataset("capitals_upper", DATA, include_paths=[folder]).total() == 12  # the others still load


def test_a_bad_template_is_named_with_its_file_and_line(in_tasks_dir, tmp_path):
    folder = broken_copy(tmp_path, "capitals_upper.yaml",
                         (TASKS / "capitals_upper.yaml").read_text().replace("{{ country | upper }}", "{{ country | upper }"))
    with pytest.raises(DatasetError) as caught:
        get_dataset("capitals_upper", DATA, include_paths=[folder])
    assert "capitals_upper.yaml" in str(caught.value) and "TemplateSyntaxError" in str(caught.value)
    assert "template line 1" in str(caught.value)


def test_a_runner_reports_a_broken_task_as_its_failure(in_tasks_dir, tmp_path):
    folder = broken_copy(tmp_path, "helpers.py", "def question(doc):\n    return doc['no such field']\n")
    info = EvalInfo(eval_model="m", model="m", eval_url="http://127.0.0.1:9/v1/chat/completions")
    result = asyncio.run(run(RunRequest(info, "capitals", tmp_path / "out", data_dir=DATA, include_paths=(folder,))))
    assert result.status is Status.FAILURE
    assert "capitals.yaml" in result.message and "KeyError" in result.message


def test_a_split_is_processed_once_and_a_generator_of_documents_is_made_anew():
    from flageval.datasets.lmeval.offline import _once

    calls = []

    def processed():
        calls.append(1)
        return [{"q": 1}, {"q": 2}]

    once = _once(processed)
    assert once() is once() and len(calls) == 1

    def generated():
        calls.append(1)
        return (doc for doc in [{"q": 1}])

    again = _once(generated)
    assert list(again()) == list(again()) == [{"q": 1}]
