"""The native gsm8k and MMLU (the fast path) give the result the lm-eval path gives on the same task and the
same replies; where the two legitimately differ (gsm8k's chat messages; the stop strings a chat reply is cut
at), exactly that difference, and everything else equal.

gsm8k: the lm-eval path is lm-eval's own `gsm8k` task run by our engine (LMEvalTask), over the same files.
MMLU: lm-eval's `mmlu` reads cais/mmlu, which the data directory does not hold; its per-sample verdicts are
compared with lm-eval's in test_fidelity_nlp.py, and here the native result is lm-eval's aggregation of them
(its group rule, read from its YAML)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval
import yaml
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.lmeval import LMEvalTask
from flageval.engine.types import Reply
from lm_eval.api.metrics import aggregate_subtask_metrics

DATA = default_data_dir()
LIMIT = 120
# Replies as models write them: right, wrong, in every form the two filters read differently.
GSM8K_REPLIES = [
    "{steps}\n#### {answer}", "The answer is {answer}.", "#### ${answer}", "#### {wrong}",
    "I think it is {answer} or maybe {wrong}", "no number here", "", "#### {answer}.0",
    "Answer: {wrong}, final: {answer}", "{steps}\n#### {answer_commas}",
]


def gsm8k_reply(doc: dict, n: int) -> str:
    answer = doc["answer"].split("#### ")[-1].strip()
    number = answer.replace(",", "")
    wrong = str(int(number) + 1) if number.lstrip("-").isdigit() else "7"
    commas = f"{int(number):,}" if number.lstrip("-").isdigit() else answer
    steps = doc["answer"].split("####")[0].strip()
    return GSM8K_REPLIES[n % len(GSM8K_REPLIES)].format(answer=answer, wrong=wrong, answer_commas=commas, steps=steps)


def both_gsm8k(kind: str):
    native = get_dataset("gsm8k", DATA, limit=LIMIT, kind=kind)
    lm = LMEvalTask("gsm8k", DATA, LIMIT, kind=kind)
    return native, list(native.items(kind)), lm, list(lm.items(kind))


def score_both(native, native_items, lm, lm_items, texts):
    ours = [native.score(item, [Reply(text=t)]) for item, t in zip(native_items, texts)]
    theirs = [lm.score(item, [Reply(text=t)]) for item, t in zip(lm_items, texts)]
    return ours, theirs


def assert_same_result(native, ours, lm, theirs):
    for filter_name in ("strict-match", "flexible-extract"):
        assert [r.scores[filter_name] for r in ours] == [r.scores[f"exact_match,{filter_name}"] for r in theirs]
    mine, reference = native.aggregate(ours), lm.aggregate(theirs)
    assert mine["accuracy"] == reference["accuracy"]
    assert mine["strict-match"] == pytest.approx(reference["exact_match,strict-match"], abs=1e-9)
    assert mine["flexible-extract"] == pytest.approx(reference["exact_match,flexible-extract"], abs=1e-9)
    assert 0 < mine["accuracy"] < 100


def test_gsm8k_on_completions_sends_and_scores_as_the_lm_eval_path():
    native, native_items, lm, lm_items = both_gsm8k("completions")
    assert [i.bodies for i in native_items] == [i.bodies for i in lm_items]
    texts = [gsm8k_reply(item.meta["doc"], n) for n, item in enumerate(native_items)]
    ours, theirs = score_both(native, native_items, lm, lm_items, texts)
    assert_same_result(native, ours, lm, theirs)


def test_gsm8k_on_chat_differs_from_the_lm_eval_path_only_in_the_form_of_its_messages_and_stop_cut():
    """Native gsm8k sends the five examples and the question as one user message (lm-eval's
    `--apply_chat_template`); lm-eval's path sends them as turns (`--fewshot_as_multiturn`). The same examples,
    drawn alike, the same question; the request's other fields are the same."""
    native, native_items, lm, lm_items = both_gsm8k("chat")
    for ours, theirs in zip(native_items, lm_items):
        (message,), turns = ours.bodies[0]["messages"], theirs.bodies[0]["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * 5 + ["user"]
        joined = "".join(q["content"] + " " + a["content"] + "\n\n" for q, a in zip(turns[:-1:2], turns[1::2]))
        assert message == {"role": "user", "content": joined + turns[-1]["content"]}
        rest = lambda body: {k: v for k, v in body.items() if k != "messages"}
        assert rest(ours.bodies[0]) == rest(theirs.bodies[0])

    texts = [gsm8k_reply(item.meta["doc"], n) for n, item in enumerate(native_items)]
    ours, theirs = score_both(native, native_items, lm, lm_items, texts)
    assert_same_result(native, ours, lm, theirs)

    # A server that ignores `stop` may go on to a next "Question:". Native gsm8k cuts the reply there, as a
    # completions server would have; lm-eval's chat model keeps the whole reply. Only such replies differ.
    ran_on = [t + "\n\nQuestion: and then?\nAnswer: 12345\n#### 12345" for t in texts]
    ours, theirs = score_both(native, native_items, lm, lm_items, ran_on)
    cut = [r.scores["flexible-extract"] for r in ours]
    assert cut == [r.scores["flexible-extract"] for r in score_both(native, native_items, lm, lm_items, texts)[0]]
    assert all(r.scores["exact_match,flexible-extract"] == 0 for r in theirs)  # lm-eval reads 12345, the run-on
    assert sum(cut) > 0


def lm_eval_mmlu_rule() -> tuple[bool, dict[str, str]]:
    """Whether every level of lm-eval's `mmlu` group weights by size, and each subject's category."""
    folder = Path(lm_eval.__file__).parent / "tasks/mmlu/default"
    groups = [yaml.safe_load((folder / f"{name}.yaml").read_text()) for name in
              ("_mmlu", "_mmlu_stem", "_mmlu_other", "_mmlu_social_sciences", "_mmlu_humanities")]
    by_size = all(m.get("weight_by_size") for g in groups for m in g["aggregate_metric_list"])
    categories = {}
    for path in folder.glob("mmlu_*.yaml"):
        config = yaml.safe_load(path.read_text())
        categories[config["dataset_name"]] = config["tag"]
    return by_size, categories


def test_mmlu_accuracy_is_lm_eval_s_aggregation_of_its_verdicts():
    by_size, categories = lm_eval_mmlu_rule()
    assert by_size
    dataset = get_dataset("mmlu", DATA, limit=7, mode="generative", kind="chat")
    records, by_subject = [], defaultdict(list)
    for n, item in enumerate(dataset.items("chat")):
        doc = item.meta["doc"]
        letter = "ABCD"[doc["answer"] if n % 3 else (doc["answer"] + 1) % 4]
        record = dataset.score(item, [Reply(text=letter)])
        records.append(record)
        by_subject[item.meta["subject"]].append(record.scores["exact_match"])
    assert set(by_subject) == set(categories)  # every subject lm-eval's group holds
    # lm-eval: mean per subject, then size-weighted per category, then size-weighted over categories
    per_category = defaultdict(lambda: ([], []))
    for subject, values in by_subject.items():
        means, sizes = per_category[categories[subject]]
        means.append(sum(values) / len(values))
        sizes.append(len(values))
    levels = [(aggregate_subtask_metrics(m, s, True), sum(s)) for m, s in per_category.values()]
    theirs = aggregate_subtask_metrics([m for m, _ in levels], [s for _, s in levels], True)
    assert dataset.aggregate(records)["accuracy"] == pytest.approx(100 * theirs, abs=0.005)
