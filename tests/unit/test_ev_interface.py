"""The interface EV datasets plug into, exercised by a small dataset written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flageval.datasets import DatasetError, suite
from flageval.datasets.ev import EVDataset
from flageval.datasets.points import mask_mean, parse_points, read_mask
from flageval.engine.types import Reply
from PIL import Image


class Pointing(EVDataset):
    name = "toy-ev"
    folder = "toy_ev"
    post_prompt = "Answer with a letter, or with points: Answer: [(x1, y1), ...]"


def write_dataset(root, rows):
    folder = root / "toy_ev"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), (10, 200, 30)).save(folder / "images" / "scene.png")
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, :20] = 255  # the left half is right
    Image.fromarray(mask).save(folder / "mask.png")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


ROWS = [
    {"id": "c1", "question": "Which way is the robot facing?", "images": ["images/scene.png"],
     "options": ["left", "right"], "answer": "B", "group": "orientation"},
    {"id": "p1", "question": "Point at free space.", "image": "images/scene.png", "mask": "mask.png",
     "width": 40, "height": 20, "group": "pointing"},
]


def test_requests_and_prompts(tmp_path):
    write_dataset(tmp_path, ROWS)
    dataset = Pointing(tmp_path)
    assert dataset.domain == "EV" and dataset.total() == 2
    items = list(dataset.items("chat"))
    choice = items[0].bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in choice] == ["image_url", "text"]
    assert choice[1]["text"] == (" Which way is the robot facing?\nA. left\nB. right\n"
                                 "Answer with a letter, or with points: Answer: [(x1, y1), ...]")
    assert items[0].id == "toy-ev/c1"


def test_scoring_choices_and_points(tmp_path):
    write_dataset(tmp_path, ROWS)
    dataset = Pointing(tmp_path)
    choice, points = dataset.items("chat")
    assert dataset.score(choice, [Reply(text="Facing away.\nAnswer: B")]).scores == {"accuracy": 1.0}
    assert dataset.score(choice, [Reply(text="Answer: A")]).scores == {"accuracy": 0.0}
    half = dataset.score(points, [Reply(text="Sure.\nAnswer: [(0.25, 0.5), (0.75, 0.5)]")])
    assert half.scores == {"accuracy": 0.5}
    assert half.extracted == {"points": [(10, 10), (30, 10)], "boxes": []}
    assert dataset.score(points, [Reply(text="Answer: [(0.1, 0.1, 0.5, 1.0)]")]).scores == {"accuracy": 1.0}
    assert dataset.score(points, [Reply(text="Answer: [(5, 5), (15, 19)]")]).scores == {"accuracy": 1.0}
    outside = dataset.score(points, [Reply(text="Answer: [(5, 5), (400, 5), (-1, 3)]")])
    assert outside.scores["accuracy"] == pytest.approx(1 / 3)
    assert dataset.score(points, [Reply(text="no idea")]).scores == {"accuracy": 0.0}
    rejected = dataset.score(points, [Reply(text="Error code: 500")])
    records = [dataset.score(choice, [Reply(text="B")]), half, rejected]
    assert dataset.aggregate(records) == {"accuracy": 75.0, "accuracy/orientation": 100.0, "accuracy/pointing": 50.0,
                                          "rejected": 1.0}


def test_points_and_boxes_as_flagevalmm_reads_them(tmp_path):
    def read(text, last_line=True):
        found = parse_points(text, 100, 40, last_line=last_line)
        return found.points, found.boxes

    assert read("first line (1, 2)\n(3, 4) and (0.5, 0.25)") == ([(3, 4), (50, 10)], [])
    assert read("first line (1, 2)\n(3, 4)", last_line=False) == ([(1, 2), (3, 4)], [])
    assert read("(5, 0.5)") == ([(500, 20)], [])  # one float scales both
    assert read("(0.1, 0.1, 0.2, 0.3)") == ([], [(10, 4, 20, 12)])
    assert read("(-5, -5, 500, 10)") == ([], [(-5, -5, 500, 10)])  # kept as written: numpy slices it
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    values = read_mask(tmp_path / "m.png", (4, 4))
    assert mask_mean(parse_points("(0, 0, 4, 4)", 4, 4), values) == 0.25
    assert mask_mean(parse_points("(0, 0) (0, 0, 2, 1)", 4, 4), values) == 1.0
    assert mask_mean(parse_points("(-1, -1, 4, 4)", 4, 4), values) == 0.0  # mask[-1:4, -1:4]: the far corner
    assert mask_mean(parse_points("none", 4, 4), values) == 0.0


def test_a_missing_mask_fails_the_sample(tmp_path):
    folder = write_dataset(tmp_path, ROWS)
    (folder / "mask.png").unlink()
    dataset = Pointing(tmp_path)
    _, points = dataset.items("chat")
    record = dataset.score(points, [Reply(text="Answer: [(1, 1)]")])
    assert record.error.endswith("mask.png is missing") and record.scores == {}


def test_absent_files_name_the_expected_location(tmp_path):
    with pytest.raises(DatasetError, match=rf"toy-ev: annotation file not found: expected {tmp_path}/toy_ev/data\.jsonl"):
        Pointing(tmp_path)
    assert not Pointing.present(tmp_path)
    write_dataset(tmp_path, ROWS)
    assert Pointing.present(tmp_path)


def test_malformed_rows_are_refused(tmp_path):
    write_dataset(tmp_path, [{"id": "x", "question": "q", "options": ["a"], "answer": "first"}])
    with pytest.raises(DatasetError, match="needs a letter answer"):
        Pointing(tmp_path)
    write_dataset(tmp_path, [{"id": "x", "question": "q"}])
    with pytest.raises(DatasetError, match="neither options nor a mask"):
        Pointing(tmp_path)
    write_dataset(tmp_path, [{"id": "x", "question": "q", "mask": "mask.png"}])
    with pytest.raises(DatasetError, match="no integer width and height"):
        Pointing(tmp_path)


def test_domains_have_suites(tmp_path):
    assert suite("MM") == ["mathvision"]
    assert suite("MM", data_dir=tmp_path) == ["mathvision"]  # nothing present: each fails with its location
    assert suite("EV") == ["pca_eval_domestic", "erqa", "where2place"]
    assert suite("EV", data_dir=tmp_path) == ["pca_eval_domestic", "erqa", "where2place"]
    assert suite("EV", "pca_eval_domestic") == ["pca_eval_domestic"]
    with pytest.raises(DatasetError, match="unknown mode"):
        suite("MM", "mmmu")
