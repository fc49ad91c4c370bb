"""Prompts and scores against lm-evaluation-harness 0.4.13 itself, built offline from the same files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval
import yaml
from flageval.datasets import default_data_dir, get_dataset
from flageval.engine.types import Reply
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask
from lm_eval.models.openai_completions import LocalCompletionsAPI

DATA = default_data_dir()
TASKS = Path(lm_eval.__file__).parent / "tasks"
SUBJECTS = ["abstract_algebra", "high_school_us_history", "world_religions"]


def load_config(path: Path) -> dict:
    """A task YAML with its `include` resolved (plain YAML; lm-eval's !function tags are not used here)."""
    config = yaml.safe_load(path.read_text())
    if "include" in config:
        base = load_config(path.parent / config.pop("include"))
        base.update(config)
        config = base
    return config


def chat_template(messages, add_generation_prompt=True):
    # What TemplateAPI.apply_chat_template returns without a tokenizer: the messages as JSON.
    return json.dumps(messages, ensure_ascii=False)


def lm_eval_gsm8k(limit: int, chat: bool) -> ConfigurableTask:
    config = load_config(TASKS / "gsm8k" / "gsm8k.yaml")
    config.pop("dataset_name")
    config["dataset_path"] = "json"
    config["dataset_kwargs"] = {"data_files": {"train": str(DATA / "gsm8k/train.jsonl"), "test": str(DATA / "gsm8k/test.jsonl")}}
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, apply_chat_template=chat, chat_template=chat_template if chat else None)
    return task


def _mmlu_docs(dataset):
    def row(doc):
        return {"question": doc["question"], "choices": [str(doc[f"choice{i}"]) for i in range(4)], "answer": int(doc["answer"])}

    return dataset.map(row)


def lm_eval_mmlu(subject: str, limit: int, generative: bool, chat: bool = False) -> ConfigurableTask:
    folder = "generative" if generative else "default"
    suffix = "_generative" if generative else ""
    config = load_config(TASKS / "mmlu" / folder / f"mmlu_{subject}.yaml")
    config["task"] = f"mmlu_{subject}{suffix}"
    config.pop("dataset_name")
    config["dataset_path"] = "csv"
    config["dataset_kwargs"] = {
        "data_files": {"test": str(DATA / f"mmlu/test/{subject}_test.csv"), "dev": str(DATA / f"mmlu/dev/{subject}_dev.csv")},
        "keep_default_na": False,
    }
    config["process_docs"] = _mmlu_docs
    config["num_fewshot"] = 5  # lm_eval --num_fewshot 5: the classic 5-shot MMLU
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, apply_chat_template=chat, chat_template=chat_template if chat else None)
    return task


def ours(name: str, kind: str, limit: int, mode: str | None = None):
    dataset = get_dataset(name, DATA, limit=limit, mode=mode, kind=kind)
    return dataset, list(dataset.items(kind))


def by_doc(task: ConfigurableTask) -> dict[int, list[Instance]]:
    grouped: dict[int, list[Instance]] = {}
    for inst in task.instances:
        grouped.setdefault(inst.doc_id, []).append(inst)
    return grouped


# --- prompts ---------------------------------------------------------------------------------------


def test_gsm8k_prompts_equal_lm_eval_completions():
    task = lm_eval_gsm8k(100, chat=False)
    _, items = ours("gsm8k", "completions", 100)
    theirs = [inst.args[0] for inst in sorted(task.instances, key=lambda i: i.doc_id)]
    assert [item.bodies[0]["prompt"] for item in items] == theirs
    until = task.instances[0].args[1]["until"]
    assert all(item.bodies[0]["stop"] == until for item in items)


def test_gsm8k_prompts_equal_lm_eval_chat_messages():
    task = lm_eval_gsm8k(100, chat=True)
    _, items = ours("gsm8k", "chat", 100)
    theirs = [json.loads(inst.args[0]) for inst in sorted(task.instances, key=lambda i: i.doc_id)]
    assert [item.bodies[0]["messages"] for item in items] == theirs


@pytest.mark.parametrize("generative", [False, True])
def test_mmlu_prompts_equal_lm_eval(generative):
    kind, mode = ("chat", "generative") if generative else ("completions", "loglikelihood")
    _, items = ours("mmlu", kind, 20, mode)
    for subject in SUBJECTS:
        task = lm_eval_mmlu(subject, 20, generative, chat=generative)
        mine = [item for item in items if item.meta["subject"] == subject]
        grouped = by_doc(task)
        assert len(mine) == len(grouped) == 20
        for row, item in enumerate(mine):
            instances = sorted(grouped[row], key=lambda i: i.idx)
            if generative:
                assert item.bodies[0]["messages"] == json.loads(instances[0].args[0])
                assert item.bodies[0]["stop"] == instances[0].args[1]["until"]
            else:
                assert [b["prompt"] for b in item.bodies] == [ctx + cont for ctx, cont in (i.args for i in instances)]


# --- scoring ---------------------------------------------------------------------------------------

GSM8K_REPLIES = [
    "{steps}\n#### {answer}",
    "{steps}\n#### {answer}.",
    "The answer is {answer}.",
    "#### ${answer}",
    "#### {answer_commas}",
    "So she pays $1,000 in total.\n#### 1,000",
    "#### {wrong}",
    "I think it is {answer} or maybe {wrong}",
    "{answer} apples and then {wrong} pears",
    "no number here",
    "",
    "#### -{answer}",
    "####{answer}",
    "#### {answer}\nQuestion: what next?\n#### 3",
    "  #### {answer}  ",
    "The total is 1.5.\n#### 1.50",
    "$ {answer}.00",
    "#### {answer}.0",
    "Answer: {wrong}, final: {answer}",
    "#### 5,,5",
]


def _gsm8k_texts(doc):
    answer = doc["answer"].split("#### ")[-1].strip()
    number = answer.replace(",", "")
    wrong = str(int(number) + 1) if number.lstrip("-").isdigit() else "7"
    commas = f"{int(number):,}" if number.lstrip("-").isdigit() else answer
    steps = doc["answer"].split("####")[0].strip()
    return [t.format(answer=answer, wrong=wrong, answer_commas=commas, steps=steps) for t in GSM8K_REPLIES]


def lm_eval_scores(task: ConfigurableTask, instances: list[Instance], texts: list[str]) -> list[dict]:
    """Run lm-eval's own filter ensembles and process_results over the given response texts."""
    for inst, text in zip(instances, texts):
        inst.resps = [text]
        inst.filtered_resps = {}
    for ensemble in task._filters:
        ensemble.apply(instances)
    results = []
    for inst in instances:
        merged = {}
        for ensemble in task._filters:
            for metric, value in task.process_results(inst.doc, [inst.filtered_resps[ensemble.name]]).items():
                merged[f"{ensemble.name}/{metric}"] = float(value)
        results.append(merged)
    return results


def test_gsm8k_scores_equal_lm_eval_filters_and_metric():
    task = lm_eval_gsm8k(60, chat=False)
    dataset, items = ours("gsm8k", "completions", 60)
    instances, texts, mine = [], [], []
    for inst, item in zip(sorted(task.instances, key=lambda i: i.doc_id), items):
        for text in _gsm8k_texts(inst.doc):
            clone = Instance(request_type=inst.request_type, doc=inst.doc, arguments=inst.arguments, idx=0)
            instances.append(clone)
            texts.append(text)
            record = dataset.score(item, [Reply(text=text)])
            mine.append({f"{name}/exact_match": value for name, value in record.scores.items()})
    theirs = lm_eval_scores(task, instances, texts)
    assert len(theirs) == 60 * len(GSM8K_REPLIES)
    assert mine == theirs
    assert 0 < sum(m["strict-match/exact_match"] for m in mine) < len(mine)  # the set holds both verdicts


MMLU_REPLIES = ["{L}", " {L}", "{L}.", "({L})", "{l}", "{L}. {text}", "{W}", "The answer is {L}", "{L}\nbecause", "", "\n{L}", "{L}  ", "Answer: {L}"]


def test_mmlu_generative_scores_equal_lm_eval():
    dataset, items = ours("mmlu", "completions", 8, "generative")
    for subject in SUBJECTS:
        task = lm_eval_mmlu(subject, 8, generative=True)
        mine_items = [item for item in items if item.meta["subject"] == subject]
        instances, texts, mine = [], [], []
        for inst, item in zip(sorted(task.instances, key=lambda i: i.doc_id), mine_items):
            letter = "ABCD"[inst.doc["answer"]]
            wrong = "ABCD"[(inst.doc["answer"] + 1) % 4]
            for template in MMLU_REPLIES:
                text = template.format(L=letter, l=letter.lower(), W=wrong, text=inst.doc["choices"][inst.doc["answer"]])
                instances.append(Instance(request_type=inst.request_type, doc=inst.doc, arguments=inst.arguments, idx=0))
                texts.append(text)
                mine.append({"get_response/exact_match": dataset.score(item, [Reply(text=text)]).scores["exact_match"]})
        assert mine == lm_eval_scores(task, instances, texts)


def _pseudo_tokens(text: str) -> list[str]:
    import re

    return re.findall(r"\s?\w+|\s?[^\w\s]|\s+", text)


def test_mmlu_loglikelihood_picks_the_same_choice_as_lm_eval():
    rng = random.Random(5)
    dataset, items = ours("mmlu", "completions", 10, "loglikelihood")
    for subject in SUBJECTS:
        task = lm_eval_mmlu(subject, 10, generative=False)
        grouped = by_doc(task)
        for row, item in enumerate(i for i in items if i.meta["subject"] == subject):
            instances = sorted(grouped[row], key=lambda i: i.idx)
            replies, lm_eval_lls = [], []
            for inst, body in zip(instances, item.bodies):
                context, continuation = inst.args
                ctx_tokens, cont_tokens = _pseudo_tokens(context), _pseudo_tokens(continuation)
                tokens = ctx_tokens + cont_tokens + ["\n"]  # echo, then the one generated token
                logprobs = [None] + [round(rng.uniform(-5, 0), 3) for _ in tokens[1:]]
                if rng.random() < 0.2:  # ties happen with real servers too
                    logprobs[len(ctx_tokens)] = -1.0
                offsets, at = [], 0
                for token in tokens:
                    offsets.append(at)
                    at += len(token)
                choice = {"index": 0, "text": body["prompt"] + "\n", "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets, "top_logprobs": [{t: lp if lp is not None else 0.0} for t, lp in zip(tokens, logprobs)]}}
                replies.append(Reply(text=choice["text"], logprobs=choice["logprobs"]))
                lm_eval_lls.append(LocalCompletionsAPI.parse_logprobs({"choices": [choice]}, ctxlens=[len(ctx_tokens)])[0])
            theirs = task.process_results(instances[0].doc, lm_eval_lls)["acc"]
            record = dataset.score(item, replies)
            assert record.scores["acc"] == float(theirs), (subject, row)
