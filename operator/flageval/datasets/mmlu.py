"""MMLU as lm-evaluation-harness 0.4.13's `mmlu` (loglikelihood) and `mmlu_generative` groups.

57 subjects, 5-shot from each subject's dev split (first five, in order). Loglikelihood runs on
completions endpoints: one body per choice, the continuation's logprob summed from the echoed prompt
tokens that the server's `text_offset`s place after the context — no tokenizer needed. Generative
runs on chat endpoints and scores the first line of the answer against the letter. The group's
accuracy is weighted by subject size, i.e. the mean over every question. `limit` applies to each
subject, as lm-eval's --limit does for the tasks of a group.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_csv
from flageval.datasets.harness import (
    cut_at_stop,
    exact_match,
    mean_percent,
    regex_filter,
)
from flageval.engine.types import EndpointKind, Reply, WorkItem

HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
LETTERS = ["A", "B", "C", "D"]
NUM_FEWSHOT = 5
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
GENERATIVE_UNTIL = ["</s>", "\n"]
MAX_GEN_TOKS = 256
MODES = ("loglikelihood", "generative")


def doc_to_text(doc: dict) -> str:
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _doc(row: list[str], path: Path, number: int) -> dict:
    if row[5] not in ("0", "1", "2", "3"):
        raise DatasetError(f"{path}:{number} has answer '{row[5]}', expected 0-3")
    return {"question": row[0], "choices": row[1:5], "answer": int(row[5])}


SCAN_BACK = 8  # tokens before the one the context ends in that are read too (a token's text may run past the next offset)


def first_continuation_token(offsets: list[int], context_chars: int) -> int:
    """Where to start reading the echoed tokens for the continuation: a few tokens before the one the
    context ends in (offsets are increasing: found by bisection, not by reading the whole prompt), or the
    first token when the offsets are not in order."""
    if offsets != sorted(offsets):
        return 0
    return max(0, bisect_right(offsets, context_chars) - 1 - SCAN_BACK)


def continuation_logprob(logprobs: dict, context_chars: int, prompt_chars: int) -> float:
    """Sum of the logprobs of the echoed tokens that overlap the continuation (by text offset)."""
    total = 0.0
    tokens, token_logprobs, offsets = logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"]
    first = first_continuation_token(offsets, context_chars)
    for token, logprob, start in zip(islice(tokens, first, None), islice(token_logprobs, first, None),
                                     islice(offsets, first, None)):
        end = start + len(token)
        if start >= prompt_chars:  # the generated token after the echo
            break
        if end > context_chars and logprob is not None:
            total += logprob
    return total


class MMLU:
    name = "mmlu"
    domain = "NLP"

    def __init__(self, data_dir: Path, limit: int | None = None, *, mode: str | None = None, kind: EndpointKind = "chat"):
        self.mode = mode or ("generative" if kind == "chat" else "loglikelihood")
        if self.mode not in MODES:
            raise DatasetError(f"mmlu has no mode '{mode}'; modes: {', '.join(MODES)}")
        if self.mode == "loglikelihood" and kind == "chat":
            raise DatasetError("mmlu loglikelihood needs a completions endpoint (…/v1/completions) with echo and logprobs")
        folder = Path(data_dir) / "mmlu"
        test_files = sorted((folder / "test").glob("*_test.csv"))
        if not test_files:
            raise DatasetError(f"{folder / 'test'} holds no <subject>_test.csv files")
        self.subjects: list[tuple[str, list[dict], list[dict]]] = []
        for test_file in test_files:
            subject = test_file.name.removesuffix("_test.csv")
            dev_file = folder / "dev" / f"{subject}_dev.csv"
            test = [_doc(r, test_file, n) for n, r in enumerate(read_csv(test_file, HEADER)[:limit], 2)]
            dev = [_doc(r, dev_file, n) for n, r in enumerate(read_csv(dev_file, HEADER), 2)]
            if len(dev) < NUM_FEWSHOT:
                raise DatasetError(f"{dev_file} has {len(dev)} rows, {NUM_FEWSHOT} are needed for few-shot")
            self.subjects.append((subject, dev[:NUM_FEWSHOT], test))

    def total(self) -> int:
        return sum(len(test) for _, _, test in self.subjects)

    def context(self, subject: str, shots: list[dict], doc: dict) -> tuple[str, str]:
        """(system text, user text) as lm-eval builds them: the description is a system turn."""
        fewshot = "".join(doc_to_text(s) + TARGET_DELIMITER + LETTERS[s["answer"]] + FEWSHOT_DELIMITER for s in shots)
        return description(subject), fewshot + doc_to_text(doc)

    def items(self, kind: EndpointKind) -> Iterator[WorkItem]:
        index = 0
        for subject, shots, test in self.subjects:
            for row, doc in enumerate(test):
                system, user = self.context(subject, shots, doc)
                if self.mode == "generative":
                    body = {"max_tokens": MAX_GEN_TOKS, "temperature": 0, "stop": list(GENERATIVE_UNTIL), "seed": 1234}
                    if kind == "chat":
                        bodies = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}], **body}]
                    else:
                        bodies = [{"prompt": system + user, **body}]
                else:
                    context = system + user
                    bodies = [
                        {"prompt": context + TARGET_DELIMITER + letter, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True, "seed": 1234}
                        for letter in LETTERS
                    ]
                meta = {"subject": subject, "doc": doc, "kind": kind}
                yield WorkItem(id=f"mmlu/{subject}/{row}", index=index, bodies=bodies, meta=meta)
                index += 1

    def score(self, item: WorkItem, replies: list[Reply]) -> SampleRecord:
        doc, subject = item.meta["doc"], item.meta["subject"]
        target = LETTERS[doc["answer"]]
        if self.mode == "generative":
            body = item.bodies[0]
            text = replies[0].text
            if item.meta["kind"] == "chat":
                text = cut_at_stop(text, body["stop"])
            extracted = first_line(text)
            score = exact_match(extracted, target, ignore_case=True, ignore_punctuation=True)
            prompt = body.get("messages") or body.get("prompt")
            response = text
        else:
            context_chars = len(item.bodies[0]["prompt"]) - len(TARGET_DELIMITER + LETTERS[0])
            lls = [
                continuation_logprob(reply.logprobs or _missing_logprobs(), context_chars, len(body["prompt"]))
                for reply, body in zip(replies, item.bodies)
            ]
            choice = max(range(len(lls)), key=lambda i: (lls[i], -i))  # np.argmax: first of equals
            extracted = LETTERS[choice]
            score = float(choice == doc["answer"])
            prompt = item.bodies[0]["prompt"][:context_chars]
            response = [round(x, 6) for x in lls]
        return SampleRecord(
            id=item.id,
            index=item.index,
            prompt=prompt,
            response=response,
            extracted=extracted,
            target=target,
            scores={"acc" if self.mode == "loglikelihood" else "exact_match": score},
            group=subject,
        )

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        records = list(records)
        metric = "acc" if self.mode == "loglikelihood" else "exact_match"
        values = [r.scores[metric] for r in records]
        return {"accuracy": mean_percent(values), metric: mean_percent(values)}


FIRST_LINE = re.compile(r"^(.*?)(?=\n|$)")
TRAILING_SPACE = re.compile(r"^(.*?)\s*$")


def first_line(text: str) -> str:
    """mmlu_generative's get_response filter: regex first line, remove_whitespace, regex, take_first."""
    return regex_filter(regex_filter(text, FIRST_LINE).strip(), TRAILING_SPACE)


def _missing_logprobs() -> dict:
    raise ValueError("the completions answer carries no logprobs (the server must support echo with logprobs)")
