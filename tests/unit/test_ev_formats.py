"""ERQA (TFRecord) and Where2Place (pictures + masks) on small synthetic files in their formats:
requests as FlagEvalMM builds them, hand-checked scores, and damaged inputs failing cleanly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flageval.datasets import DatasetError, get_dataset, suite
from flageval.datasets.erqa import POST_PROMPT as ERQA_POST
from flageval.datasets.images import decode_data_url, layout
from flageval.datasets.where2place import POST_PROMPT as W2P_POST
from flageval.engine.types import Reply
from PIL import Image
from support.ev_fixtures import (
    erqa_examples,
    w2p_mask,
    write_erqa,
    write_ev_fixtures,
    write_where2place,
)


def sizes(content):
    out = []
    for part in content:
        if part["type"] == "image_url":
            with Image.open(io.BytesIO(decode_data_url(part["image_url"]["url"])[1])) as img:
                out.append(img.size)
    return out


def test_erqa_pictures_go_where_visual_indices_say(tmp_path):
    write_erqa(tmp_path)
    dataset = get_dataset("erqa", tmp_path)
    assert dataset.total() == 6 and [p.target for p in dataset.problems] == ["B", "C", "A", "B", "D", "A"]
    items = list(dataset.items("chat"))
    contents = [item.bodies[0]["messages"][0]["content"] for item in items]
    # visual_indices [7, 18]: cut after "Before:" and "after:".
    assert [p.get("text") for p in contents[2]] == [
        "Before:", None, " and after:", None,
        " which action happened? Choices: A. open B. close C. lift D. push\n" + ERQA_POST]
    assert sizes(contents[2]) == [(36, 36), (44, 28)]
    # [0, 0]: both first; none given: first; the direct-answer sentence is gone.
    assert layout(contents[1]) == ["image_url", "image_url", "text"] and sizes(contents[1]) == [(40, 30), (30, 40)]
    assert layout(contents[3]) == ["image_url", "text"]
    assert contents[4][1]["text"] == "Where should the arm move next? Choices: A. left B. right C. up D. down\n" + ERQA_POST
    # [5, 0, 5]: picture 2 at 0, then the text to 5, then pictures 1 and 3.
    assert [p.get("text", "·") for p in contents[5]][:2] == ["·", "Three"]
    assert sizes(contents[5]) == [(34, 30), (30, 30), (38, 30)]
    assert dataset.present(tmp_path) and suite("EV", data_dir=tmp_path) == ["erqa"]


def test_erqa_scores_by_flagevalmm_letter_and_by_question_type(tmp_path):
    write_erqa(tmp_path)
    dataset = get_dataset("erqa", tmp_path)
    replies = ["Comparing distances.\nAnswer: B", "Answer: A", "A", "Error code: 500",
               "The arm should go down.\nAnswer: D", "<think>Answer: B</think>Answer: A"]
    records = [dataset.score(item, [Reply(text=r)]) for item, r in zip(dataset.items("chat"), replies)]
    assert [r.extracted for r in records] == ["B", "A", "A", {"rejected": "Error code"}, "D", "A"]
    assert dataset.aggregate(records) == {
        "accuracy": 80.0, "accuracy/Action Reasoning": 100.0, "accuracy/Multi-view Reasoning": 50.0,
        "accuracy/Spatial Reasoning": 100.0, "accuracy/Trajectory Reasoning": 100.0, "rejected": 1.0}


def test_a_truncated_tfrecord_fails_the_dataset_and_a_bad_picture_its_sample(tmp_path):
    path = write_erqa(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    with pytest.raises(DatasetError, match=rf"{path}: record 5 at byte \d+ is truncated"):
        get_dataset("erqa", tmp_path)
    examples = erqa_examples()
    examples[1]["image/encoded"][1] = b"\xff\xd8\xff garbage"
    write_erqa(tmp_path, examples)
    dataset = get_dataset("erqa", tmp_path)
    items = list(dataset.items("chat"))
    assert [bool(i.bodies) for i in items] == [True, False, True, True, True, True]
    record = dataset.score(items[1], [])
    assert record.error.startswith(f"image {path}#1/image 2 cannot be decoded")
    del examples[0]["answer"]
    write_erqa(tmp_path, examples)
    with pytest.raises(DatasetError, match="record 0 lacks feature\\(s\\) answer"):
        get_dataset("erqa", tmp_path)


def test_where2place_request_and_hand_checked_scores(tmp_path):
    write_where2place(tmp_path)
    dataset = get_dataset("where2place", tmp_path)
    items = list(dataset.items("chat"))
    content = items[0].bodies[0]["messages"][0]["content"]
    assert layout(content) == ["image_url", "text"] and sizes(content) == [(64, 48)]
    assert content[1]["text"].startswith(" Find free space on the shelf to put object 0")
    assert content[1]["text"].endswith("\n" + W2P_POST.strip())
    # Masks: question n's free space is rows 8–39, columns (7n mod 48) to +16.
    replies = [
        "Answer: [(0.125, 0.5), (0.5, 0.5)]",  # q0: (8, 24) in, (32, 24) out → 0.5, FlagEvalMM right
        "Answer: [(10, 20), (20, 20), (30, 20), (40, 20)]",  # q1 (cols 7–22): 2 of 4 in → 0.5, right
        "Answer: [(0.9, 0.9)]",  # q2: out → 0, wrong
        "There (20, 20) maybe\nAnswer: [(60, 20)]",  # q3 (cols 21–36): whole reply 0/2; last line 0
        "Error code: 429",  # q4: rejected
        "No idea.",  # q5: no point → 0, wrong
    ]
    records = [dataset.score(item, [Reply(text=r)]) for item, r in zip(items, replies)]
    assert [r.scores.get("accuracy") for r in records] == [0.5, 0.5, 0.0, 0.0, None, 0.0]
    assert records[5].extracted["problem"] == "no point found in the reply"
    assert dataset.aggregate(records) == {"accuracy": 20.0, "embodied_verse_accuracy": 40.0, "accuracy/seen": 16.67,
                                          "accuracy/unseen": 25.0, "rejected": 1.0}  # unseen: q0, q3


def test_where2place_masks_by_position_and_broken_masks_fail_their_samples(tmp_path):
    root = write_where2place(tmp_path)
    (root / "masks" / "00.png").rename(root / "masks" / "00.jpg")  # RoboPoint's masks/NN.jpg, found by position
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "masks" / "01.png")  # wrong size
    (root / "masks" / "02.png").write_bytes(b"not a png")
    (root / "masks" / "03.png").unlink()
    (root / "images" / "04.png").write_bytes(b"\x89PNG broken")
    dataset = get_dataset("where2place", tmp_path)
    items = list(dataset.items("chat"))
    records = [dataset.score(item, [Reply(text="Answer: [(8, 24)]")] if item.bodies else []) for item in items]
    assert records[0].error is None and records[0].scores["accuracy"] == 1.0 and records[0].target == "masks/00.jpg"
    assert records[1].error == f"mask {root}/masks/01.png is 10×10 but its picture is 64×48"
    assert records[2].error.startswith(f"mask {root}/masks/02.png cannot be decoded")
    assert records[3].error == f"mask {root}/masks/03.jpg is missing"
    assert records[4].error.startswith(f"image {root}/images/04.png cannot be decoded")
    assert records[5].error is None
    assert dataset.aggregate(records)["rejected"] == 4.0


def test_the_default_ev_suite_is_what_is_present(tmp_path):
    assert suite("EV", data_dir=write_ev_fixtures(tmp_path / "d")) == ["erqa", "where2place"]
    assert w2p_mask(1)[8:40, 7:23].all()
