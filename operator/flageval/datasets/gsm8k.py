"""GSM8K as lm-evaluation-harness 0.4.13's `gsm8k` task (v3.0): 5-shot from train, strict and flexible."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl
from flageval.datasets.harness import (
    cut_at_stop,
    exact_match,
    mean_percent,
    regex_filter,
)
from flageval.engine.types import EndpointKind, Reply, WorkItem

# lm_eval/tasks/gsm8k/gsm8k.yaml
NUM_FEWSHOT = 5
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
UNTIL = ["Question:", "</s>", "<|im_end|>"]
MAX_GEN_TOKS = 256  # lm-eval API models' default max_gen_toks
FILTERS = {
    "strict-match": (re.compile(r"#### (\-?[0-9\.\,]+)"), 0),
    "flexible-extract": (re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"), -1),
}
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
HEADLINE = "strict-match"


def doc_to_text(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


class GSM8K:
    name = "gsm8k"
    domain = "NLP"

    def __init__(self, data_dir: Path, limit: int | None = None, *, mode: str | None = None, kind: EndpointKind = "chat"):
        if mode not in (None, "generative"):
            raise DatasetError(f"gsm8k has no mode '{mode}' (only generative)")
        folder = Path(data_dir) / "gsm8k"
        self.test = read_jsonl(folder / "test.jsonl", ("question", "answer"))[:limit]
        self.train = read_jsonl(folder / "train.jsonl", ("question", "answer"))

    def total(self) -> int:
        return len(self.test)

    def prompt(self, doc: dict, rnd: random.Random) -> str:
        # ContextSampler.sample: rnd.sample over the train split, one draw per doc in order.
        shots = rnd.sample(self.train, NUM_FEWSHOT)
        fewshot = "".join(doc_to_text(s) + TARGET_DELIMITER + s["answer"] + FEWSHOT_DELIMITER for s in shots)
        return fewshot + doc_to_text(doc)

    def items(self, kind: EndpointKind) -> Iterator[WorkItem]:
        rnd = random.Random(FEWSHOT_SEED)
        for index, doc in enumerate(self.test):
            prompt = self.prompt(doc, rnd)
            body: dict = {"max_tokens": MAX_GEN_TOKS, "temperature": 0, "stop": list(UNTIL), "seed": 1234}
            if kind == "chat":
                body = {"messages": [{"role": "user", "content": prompt}], **body}
            else:
                body = {"prompt": prompt, **body}
            yield WorkItem(id=f"gsm8k/{index}", index=index, bodies=[body], meta={"doc": doc, "kind": kind})

    def score(self, item: WorkItem, replies: list[Reply]) -> SampleRecord:
        doc, kind = item.meta["doc"], item.meta["kind"]
        body = item.bodies[0]
        text = replies[0].text
        if kind == "chat":
            text = cut_at_stop(text, body.get("stop") or [])
        extracted, scores = {}, {}
        for name, (pattern, group) in FILTERS.items():
            extracted[name] = regex_filter(text, pattern, group)
            scores[name] = exact_match(extracted[name], doc["answer"], regexes_to_ignore=IGNORE, ignore_case=True)
        return SampleRecord(
            id=item.id,
            index=item.index,
            prompt=body.get("messages") or body.get("prompt"),
            response=text,
            extracted=extracted,
            target=doc["answer"].split("#### ")[-1],
            scores=scores,
        )

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        records = list(records)
        metrics = {name: mean_percent([r.scores[name] for r in records]) for name in FILTERS}
        metrics["accuracy"] = metrics[HEADLINE]
        return metrics
