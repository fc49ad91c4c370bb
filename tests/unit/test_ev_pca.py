"""PCA-EVAL Domestic Robot: how its items become requests and how replies become a score."""

from __future__ import annotations

import json
import shutil

import pytest
from flageval.datasets import DatasetError, default_data_dir, get_dataset, suite
from flageval.datasets.images import decode_data_url
from flageval.engine.types import Reply

DATA = default_data_dir()
PCA = "pca_eval_domestic"
pytestmark = pytest.mark.skipif(not (DATA / PCA / "meta_data.json").is_file(), reason="no PCA-EVAL data")


def test_the_bundled_items_become_picture_then_prompt():
    dataset = get_dataset(PCA, DATA)
    assert dataset.domain == "EV" and dataset.total() == 100
    meta = json.loads((DATA / PCA / "meta_data.json").read_text())
    prompts = json.loads((DATA / PCA / "end2end_prompts.json").read_text())
    assert [p.target for p in dataset.problems] == [chr(65 + row["answer_index"]) for row in meta]
    item = next(iter(dataset.items("chat")))
    (message,) = item.bodies[0]["messages"]
    picture, text = message["content"]
    assert picture["type"] == "image_url" and text == {"type": "text", "text": " " + prompts[0]["prompt"]}
    media, data = decode_data_url(picture["image_url"]["url"])
    assert media == "image/jpeg" and data[:2] == b"\xff\xd8"
    assert item.bodies[0]["max_tokens"] == 32768


def test_scores_strict_beside_lenient_and_rejections_leave_the_denominator():
    dataset = get_dataset(PCA, DATA, limit=4)
    items = list(dataset.items("chat"))
    targets = [p.target for p in dataset.problems]
    replies = [
        f"The answer is ({targets[0]}).",  # both rules
        f"({targets[1]}) because of what I see",  # lenient only (leading letter)
        "Error code: 429 too many requests",  # rejected
        "No idea.",  # wrong under both
    ]
    records = [dataset.score(item, [Reply(text=r)]) for item, r in zip(items, replies)]
    assert records[2].extracted == {"rejected": "Error code"} and records[2].scores == {}
    assert dataset.aggregate(records) == {"accuracy": 66.67, "strict_accuracy": 33.33, "rejected": 1.0}


def test_a_missing_prompt_file_or_a_bad_answer_index_is_a_dataset_error(tmp_path):
    folder = tmp_path / PCA
    shutil.copytree(DATA / PCA, folder, ignore=shutil.ignore_patterns("imgs", "end2end_prompts.json"))
    with pytest.raises(DatasetError, match=f"prompt file not found: expected {folder}/end2end_prompts.json"):
        get_dataset(PCA, tmp_path)
    shutil.copy(DATA / PCA / "end2end_prompts.json", folder)
    meta = json.loads((folder / "meta_data.json").read_text())
    meta[3]["answer_index"] = 9
    (folder / "meta_data.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="item 3 has answer_index 9 outside its 4 actions"):
        get_dataset(PCA, tmp_path)


def test_the_ev_default_suite_keeps_what_is_present(tmp_path):
    assert suite("EV", data_dir=DATA) == [PCA]
    assert suite("EV", PCA) == [PCA]
    with pytest.raises(DatasetError, match="unknown mode"):
        suite("EV", "erqa-full")
