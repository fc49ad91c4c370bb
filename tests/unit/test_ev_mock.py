"""The reference model on EV requests: it answers only when each picture arrived, in its place."""

from __future__ import annotations

import pytest
from flageval.datasets import default_data_dir, get_dataset
from flageval.mock_model.answers_ev import EVAnswerer
from flageval.mock_model.answers_mm import CANNOT_SEE
from support.ev_fixtures import write_ev_fixtures

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "pca_eval_domestic" / "meta_data.json").is_file(), reason="no PCA-EVAL data")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_ev_fixtures(tmp_path_factory.mktemp("ev") / "data", DATA / "pca_eval_domestic")


def request(dataset, index):
    return next(item for item in dataset.items("chat") if item.index == index).bodies[0]["messages"]


def test_pictures_are_checked_for_place_and_content(data):
    model = EVAnswerer(data, accuracy=1.0, seed=0)
    pca = get_dataset("pca_eval_domestic", data, limit=30)
    # Items 1 and 25 share their prompt, not their scene: each is recognised by its picture.
    for index in (1, 25):
        key, reply = model.recognise(request(pca, index), {})
        assert key == f"pca_eval_domestic:{index}" and reply != CANNOT_SEE
    swapped = request(pca, 0)
    swapped[0]["content"][0] = request(pca, 2)[0]["content"][0]
    assert model.recognise(swapped, {})[1] == CANNOT_SEE
    erqa = get_dataset("erqa", data)
    messages = request(erqa, 5)
    parts = messages[0]["content"]
    parts[0], parts[2] = parts[2], parts[0]  # pictures 2 and 1 exchanged
    assert model.recognise(messages, {}) == ("erqa:5", CANNOT_SEE)
    missing = request(get_dataset("where2place", data), 0)
    missing[0]["content"] = [p for p in missing[0]["content"] if p["type"] == "text"]
    assert model.recognise(missing, {})[1] == CANNOT_SEE
    assert model.image_faults == {"wrong picture": 2, "no image": 1}


def test_thinking_replies_carry_a_decoy(data):
    model = EVAnswerer(data, accuracy=1.0, seed=0)
    pca = get_dataset("pca_eval_domestic", data, limit=1)
    _, reply = model.recognise(request(pca, 0), {"chat_template_kwargs": {"enable_thinking": True}})
    thought, _, answer = reply.partition("</think>")
    assert thought.startswith("<think>At first glance the answer is (B)") and answer.strip().startswith("<answer>")
