"""MathVision metrics (FlagEvalMM's accuracy, strict accuracy, rejected), records, settings and the
guard around latex2sympy."""

from __future__ import annotations

import json

import pytest
from flageval.api import SampleRecord
from flageval.datasets import DatasetError, default_data_dir, get_dataset
from flageval.datasets.latex_eval import LatexComparer, is_equal_exact, latex_number
from flageval.datasets.mathvision import grade_reply
from flageval.engine.types import Reply

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")


@pytest.fixture(scope="module")
def dataset():
    return get_dataset("mathvision", DATA, limit=12)


def scored(dataset, replies: dict[str, str]) -> list[SampleRecord]:
    records = []
    for item in dataset.items("chat"):
        problem = item.meta.problem
        records.append(dataset.score(item, [Reply(text=replies.get(problem.id, f"\\boxed{{{problem.target}}}"))]))
    return records


def test_accuracy_leaves_rejected_replies_and_failed_samples_out(dataset):
    problems = {p.id: p for p in dataset.problems}
    assert problems["4"].target == "6" and problems["8"].target == "2" and problems["6"].target == "D"
    replies = {
        "4": "\\boxed{16}",  # right only by the substring rule
        "8": "\\boxed{12}",  # right only by the substring rule
        "6": "\\boxed{E}",  # wrong letter
        "5": "",  # empty: kept, wrong
        "7": "Error code: 502 Bad Gateway",  # rejected
        "10": "Input data may contain inappropriate content.",  # rejected
    }
    records = scored(dataset, replies)
    failed = records[-1].model_copy(update={"scores": {}, "error": "image images/x.jpg is missing"})
    records[-1] = failed
    metrics = dataset.aggregate(records)
    n = 12 - 3  # two rejected replies and one failed sample
    right = n - 2  # the wrong letter and the empty reply
    assert metrics == {
        "accuracy": round(right / n * 100, 2),
        "strict_accuracy": round((right - 2) / n * 100, 2),
        "verdict_differs": 2.0,
        "rejected": 3.0,
    }
    # the runner may pass only the samples without error: the same accuracy, one fewer rejected
    ok_only = dataset.aggregate([r for r in records if r.error is None])
    assert ok_only["accuracy"] == metrics["accuracy"] and ok_only["rejected"] == 2.0


def test_all_rejected_gives_no_accuracy(dataset):
    records = scored(dataset, {p.id: "Error code: 500" for p in dataset.problems})
    assert dataset.aggregate(records) == {"verdict_differs": 0.0, "rejected": 12.0}


def test_record_shape(dataset):
    item = next(iter(dataset.items("chat")))
    record = dataset.score(item, [Reply(text="<think>hmm \\boxed{5}</think>\nSo \\boxed{16}", reasoning=None)])
    assert record.id == "mathvision/4" and record.index == 0 and record.group == "counting"
    assert record.target == "6"
    assert list(record.scores) == ["accuracy", "strict_accuracy"]  # the headline first
    assert record.scores == {"accuracy": 1.0, "strict_accuracy": 0.0}
    assert record.extracted == {"answer": "16", "rule": "substring"}
    shown = json.dumps(record.prompt)
    assert "base64," in shown and "images/4.jpg" in shown
    assert len(shown) < 1000  # the picture itself is not in the record
    rejected = dataset.score(item, [Reply(text="Can not answer because of safety")])
    assert rejected.error is None and rejected.scores == {} and rejected.extracted == {"rejected": "Can not answer because of"}


def test_multiple_choice_fallback_is_reported(dataset):
    item = next(i for i in dataset.items("chat") if i.meta.problem.id == "6")
    record = dataset.score(item, [Reply(text="The correct option is D")])
    assert record.scores == {"accuracy": 1.0, "strict_accuracy": 1.0}
    assert record.extracted == {"answer": "thecorrectoptionisd", "rule": "choice", "choice": "D"}


def test_modes_and_splits(tmp_path, monkeypatch):
    assert get_dataset("mathvision", DATA, mode="generative").split == "testmini"
    assert get_dataset("mathvision", DATA, mode="testmini").total() == 304
    with pytest.raises(DatasetError, match=r"split 'test' not found: expected .*mathvision/test\.jsonl"):
        get_dataset("mathvision", DATA, mode="test")
    monkeypatch.setenv("FLAGEVAL_MATHVISION_SPLIT", "test")
    with pytest.raises(DatasetError, match=r"mathvision/test\.jsonl"):
        get_dataset("mathvision", DATA)
    with pytest.raises(DatasetError, match="no mode 'loglikelihood'"):
        get_dataset("mathvision", DATA, mode="loglikelihood")
    with pytest.raises(DatasetError, match="needs a chat endpoint"):
        get_dataset("mathvision", DATA, kind="completions")


def test_the_full_split_loads_the_same_way(tmp_path):
    """A `test` split beside testmini is read the same way (here: testmini's rows under that name)."""
    folder = tmp_path / "mathvision"
    folder.mkdir()
    (folder / "images").symlink_to(DATA / "mathvision" / "images")
    (folder / "test.jsonl").write_text((DATA / "mathvision" / "testmini.jsonl").read_text())
    full = get_dataset("mathvision", tmp_path, mode="test", limit=5)
    mini = get_dataset("mathvision", DATA, limit=5)
    assert [p.text for p in full.problems] == [p.text for p in mini.problems]


def test_duplicate_ids_are_refused(tmp_path):
    folder = tmp_path / "mathvision"
    (folder / "images").mkdir(parents=True)
    row = {"id": "1", "question": "q <image1>", "options": [], "answer": "1", "image": "images/1.jpg"}
    (folder / "testmini.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match="problem id 1 appears twice"):
        get_dataset("mathvision", tmp_path)


# -- latex2sympy under a deadline ---------------------------------------------------------------------

def test_a_runaway_comparison_is_cut_off_and_counts_as_not_equal():
    comparer = LatexComparer(timeout=2.0)
    try:
        grade, note = comparer.equal("6", "10^{10^{10}}")
        assert grade is False and "timed out after 2 s" in note
        assert comparer.timeouts == 1
        # the next comparison gets a fresh child
        assert comparer.equal("2.5", "\\frac{5}{2}") == (True, None)
        assert comparer.starts == 2
        # and the verdict shows up in what a sample reports
        grade = grade_reply("6", "\\boxed{10^{10^{10}}}", False, comparer.equal)
        assert (grade.correct, grade.strict) == (False, False) and "timed out" in grade.note
    finally:
        comparer.close()


def test_comparisons_are_cached():
    comparer = LatexComparer(timeout=10)
    try:
        assert comparer.equal("8", "2^3") == (True, None)
        process = comparer._process
        process.kill()
        process.wait()
        assert comparer.equal("8", "2^3") == (True, None)  # answered from the cache
        assert comparer.equal("9", "2^3") == (False, None)  # a new child
        assert comparer.starts == 2
    finally:
        comparer.close()


def test_without_a_child_process_comparisons_run_here():
    comparer = LatexComparer(python="/nonexistent/python")
    assert comparer.equal("4.8", "24/5") == (True, None)
    assert comparer.equal("9", "\\sqrt{81}") == (False, None)
    assert comparer.starts == 0


def test_sympy_output_that_is_not_arithmetic_is_not_evaluated():
    with pytest.raises(ValueError, match="refusing"):
        latex_number("\\text{a}+1")  # a symbol named "\text{a}"
    assert is_equal_exact("1", "\\text{a}+1", latex_number) is False
    assert latex_number("\\frac{5}{2}") == 2.5
