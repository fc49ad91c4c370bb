"""The reference model's intended accuracy is what our datasets score its answers (no HTTP)."""

import pytest
from flageval.datasets import default_data_dir, get_dataset
from flageval.engine.types import Reply
from flageval.mock_model.answers import default_answerer, intended_accuracy

DATA = default_data_dir()


def replies_for(answerer, item, kind):
    replies = []
    for body in item.bodies:
        if kind == "chat":
            key, text = answerer.chat(body["messages"], body)
            replies.append(Reply(text=text))
        else:
            key, choice = answerer.completion(body["prompt"], body)
            replies.append(Reply(text=choice["text"], logprobs=choice["logprobs"]))
        assert key != "unknown", item.id
    return replies


@pytest.mark.parametrize(
    "name,kind,limit",
    [("gsm8k", "chat", None), ("gsm8k", "completions", 200), ("mmlu", "chat", None), ("mmlu", "completions", 20)],
)
def test_scored_accuracy_equals_intended(name, kind, limit):
    answerer = default_answerer(DATA, accuracy=0.6, seed=11)
    dataset = get_dataset(name, DATA, limit=limit, kind=kind)
    records = [dataset.score(item, replies_for(answerer, item, kind)) for item in dataset.items(kind)]
    assert len(records) == dataset.total()
    scored = dataset.aggregate(records)["accuracy"]
    assert scored == intended_accuracy(name, DATA, 0.6, 11, limit)
    assert 50 < scored < 70


def test_seeds_change_which_questions_are_right():
    a = intended_accuracy("gsm8k", DATA, 0.8, 0)
    b = intended_accuracy("gsm8k", DATA, 0.8, 7)
    assert abs(a - 80) < 3 and abs(b - 80) < 3
    same = default_answerer(DATA, 0.8, 0)
    other = default_answerer(DATA, 0.8, 7)
    keys = [f"gsm8k:{i}" for i in range(200)]
    assert [same.right(k) for k in keys] != [other.right(k) for k in keys]
