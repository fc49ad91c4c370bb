"""The reference model on MathVision: what it means to score is what our scoring gives, directly and
through the engine; it notices a missing, misplaced or wrong picture."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import shutil
import weakref

import pytest
from flageval.datasets import default_data_dir, get_dataset
from flageval.engine import Endpoint, Journal, RetryPolicy, run_dataset
from flageval.engine.types import Reply
from flageval.mock_model.answerer import intends_correct
from flageval.mock_model.answers import BenchmarkAnswerer
from flageval.mock_model.answers_mm import (
    CANNOT_SEE,
    MathVisionAnswerer,
    WithMathVision,
    intended_accuracy_mm,
    problem_key,
    with_mathvision,
)
from flageval.mock_model.server import serve_in_thread
from PIL import Image

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")


@pytest.fixture(scope="module")
def dataset():
    return get_dataset("mathvision", DATA)


@pytest.fixture(scope="module")
def items(dataset):
    return list(dataset.items("chat"))


@pytest.mark.parametrize(("accuracy", "seed"), [(0.7, 0), (0.35, 11)])
def test_every_answer_scores_as_intended(dataset, items, accuracy, seed):
    answerer = MathVisionAnswerer(DATA, accuracy, seed)
    records = []
    for item in items:
        key, text = answerer.chat(item.bodies[0]["messages"], item.bodies[0])
        assert key == problem_key(item.meta.problem.id)
        record = dataset.score(item, [Reply(text=text)])
        intended = intends_correct(key, accuracy, seed)
        assert record.scores == {"accuracy": float(intended), "strict_accuracy": float(intended)}, (key, text)
        records.append(record)
    assert not answerer.image_faults
    metrics = dataset.aggregate(records)
    assert metrics["accuracy"] == intended_accuracy_mm(DATA, accuracy, seed)
    assert metrics["verdict_differs"] == 0 and metrics["rejected"] == 0
    assert 0 < metrics["accuracy"] < 100


def test_intended_accuracy_with_a_limit():
    keys = [problem_key(str(json.loads(line)["id"]))
            for line in (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines()[:50]]
    right = sum(intends_correct(k, 0.5, 3) for k in keys)
    assert intended_accuracy_mm(DATA, 0.5, 3, limit=50) == round(right / 50 * 100, 2)


def message_of(items, problem_id):
    item = next(i for i in items if i.meta.problem.id == problem_id)
    return copy.deepcopy(item.bodies[0]["messages"])


def test_the_picture_must_arrive_in_its_place(items):
    answerer = MathVisionAnswerer(DATA, accuracy=1.0)
    right = answerer.chat(message_of(items, "6"), {})
    assert right == ("mathvision:6", right[1]) and "\\boxed{D}" in right[1]

    other = message_of(items, "7")[0]["content"][1]
    wrong_picture = message_of(items, "6")
    wrong_picture[0]["content"][1] = other
    misplaced = message_of(items, "6")
    misplaced[0]["content"].append(misplaced[0]["content"].pop(1))
    no_image = message_of(items, "6")
    del no_image[0]["content"][1]
    as_string = [{"role": "user", "content": "".join(p.get("text", "") for p in no_image[0]["content"])}]
    not_data = message_of(items, "6")
    not_data[0]["content"][1]["image_url"]["url"] = "https://example.com/6.jpg"
    garbage = message_of(items, "6")
    garbage[0]["content"][1]["image_url"]["url"] = "data:image/jpeg;base64," + base64.b64encode(b"junk").decode()
    out = io.BytesIO()
    with Image.open(DATA / "mathvision" / "images" / "6.jpg") as img:
        img.convert("RGB").resize((img.width // 2, img.height // 2)).save(out, format="JPEG")
    resized = message_of(items, "6")
    resized[0]["content"][1]["image_url"]["url"] = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()

    for messages in (wrong_picture, misplaced, no_image, as_string, not_data, garbage, resized):
        assert answerer.chat(messages, {}) == ("mathvision:6", CANNOT_SEE)
    assert answerer.image_faults == {"wrong picture": 2, "image misplaced": 1, "no image": 2, "not a data URL": 1,
                                     "undecodable": 1}


def test_cannot_see_scores_wrong(dataset, items):
    for item in items[:40]:
        record = dataset.score(item, [Reply(text=CANNOT_SEE)])
        assert record.scores == {"accuracy": 0.0, "strict_accuracy": 0.0}


def test_other_questions_go_to_the_base_answerer(items):
    combined = with_mathvision(BenchmarkAnswerer(DATA, 1.0), DATA, 1.0)
    assert isinstance(combined, WithMathVision)
    assert combined.chat(message_of(items, "4"), {})[0] == "mathvision:4"
    assert combined.chat([{"role": "user", "content": "What is love?"}], {}) == ("unknown", "I do not know.")
    base = BenchmarkAnswerer(DATA)
    assert with_mathvision(base, DATA.parent / "nowhere") is base  # no MathVision files: the base alone


# -- through the engine ---------------------------------------------------------------------------

FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


class Tracked:
    """Yields a dataset's items and keeps count of how many are alive at once."""

    def __init__(self, items):
        self.items, self.refs, self.peak = items, [], 0

    def __iter__(self):
        for item in self.items:
            self.refs.append(weakref.ref(item))
            self.peak = max(self.peak, sum(r() is not None for r in self.refs))
            yield item
            del item


def run(url, dataset, tmp_path, concurrency):
    endpoint = Endpoint(url=url.chat_url, model="mock", num_concurrent=concurrency)
    tracked = Tracked(dataset.items("chat"))
    with Journal(tmp_path / "journal.jsonl") as journal:
        summary = asyncio.run(run_dataset(endpoint, tracked, dataset.score, journal, None, dataset="mathvision",
                                          total=dataset.total(), retry_policy=FAST))
        records = journal.records()
    return summary, records, tracked


def test_a_run_scores_what_the_reference_model_intended(dataset, tmp_path):
    answerer = MathVisionAnswerer(DATA, 0.6, 5)
    with serve_in_thread(answerer) as url:
        summary, records, tracked = run(url, dataset, tmp_path, concurrency=8)
        stats = url.stats()
    assert (summary.done, summary.failed) == (304, 0)
    assert stats["total"] == 304 and set(stats["by_key"]) == {problem_key(p.id) for p in dataset.problems}
    assert not answerer.image_faults
    assert dataset.aggregate(records)["accuracy"] == intended_accuracy_mm(DATA, 0.6, 5)
    assert tracked.peak <= 8 + 2  # the workers' items, not the dataset


def test_a_broken_image_fails_its_sample_without_a_request(tmp_path):
    folder = tmp_path / "data" / "mathvision"
    (folder / "images").mkdir(parents=True)
    lines = (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines()[:12]
    (folder / "testmini.jsonl").write_text("\n".join(lines) + "\n")
    ids = [json.loads(line)["id"] for line in lines]
    for problem_id in ids:
        shutil.copy(DATA / "mathvision" / "images" / f"{problem_id}.jpg", folder / "images")
    (folder / "images" / f"{ids[0]}.jpg").write_bytes(b"GIF89a not really")
    (folder / "images" / f"{ids[5]}.jpg").unlink()
    dataset = get_dataset("mathvision", tmp_path / "data")
    answerer = MathVisionAnswerer(tmp_path / "data", 1.0)
    with serve_in_thread(answerer) as url:
        summary, records, _ = run(url, dataset, tmp_path, concurrency=3)
        stats = url.stats()
    assert (summary.done, summary.failed) == (10, 2)
    failed = {r.id: r.error for r in records if r.error}
    assert set(failed) == {f"mathvision/{ids[0]}", f"mathvision/{ids[5]}"}
    assert "cannot be decoded" in failed[f"mathvision/{ids[0]}"] and failed[f"mathvision/{ids[5]}"].endswith("is missing")
    assert stats["total"] == 10 and problem_key(ids[0]) not in stats["by_key"]
    metrics = dataset.aggregate(records)
    assert metrics["accuracy"] == 100.0 and metrics["rejected"] == 2
