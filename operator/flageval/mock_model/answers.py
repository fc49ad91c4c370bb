"""The reference model's knowledge of the NLP benchmarks: it recognises a gsm8k or MMLU question in a
request and answers right exactly when `intends_correct` says so, in the format the scorers read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from flageval.datasets.files import read_csv, read_jsonl
from flageval.datasets.mmlu import HEADER as MMLU_HEADER
from flageval.datasets.mmlu import doc_to_text as mmlu_text
from flageval.mock_model.answerer import Answerer, intends_correct
from flageval.mock_model.answers_ev import EV_DATASETS, intended_accuracy_ev

LETTERS = "ABCD"
_MMLU_SUBJECT = re.compile(r"about (.+?)\.\n\n")
_MMLU_SHOT_END = re.compile(r"\nAnswer: [ABCD]\n\n")
_TOKEN = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


def _digest(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def gsm8k_key(question: str) -> str:
    return "gsm8k:" + _digest(question)


def mmlu_key(subject: str, block: str) -> str:
    """block: the question with its options, as the prompt shows it (questions repeat within a subject)."""
    return "mmlu:" + _digest(subject, block.strip())


def _mmlu_block(row: list[str]) -> str:
    return mmlu_text({"question": row[0], "choices": row[1:5]})


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class BenchmarkAnswerer:
    """gsm8k and MMLU (generative and loglikelihood) from the benchmark files in data_dir."""

    def __init__(self, data_dir: Path, accuracy: float = 0.8, seed: int = 0):
        self.accuracy, self.seed = accuracy, seed
        self.gsm8k: dict[str, str] = {}
        gsm8k_file = Path(data_dir) / "gsm8k" / "test.jsonl"
        if gsm8k_file.exists():
            for doc in read_jsonl(gsm8k_file, ("question", "answer")):
                self.gsm8k[doc["question"]] = doc["answer"].split("#### ")[-1].strip()
        self.mmlu: dict[tuple[str, str], int] = {}
        for path in sorted((Path(data_dir) / "mmlu" / "test").glob("*_test.csv")):
            subject = path.name.removesuffix("_test.csv").replace("_", " ")
            for row in read_csv(path, MMLU_HEADER):
                self.mmlu[(subject, _mmlu_block(row))] = int(row[5])
        self.mathvision = None  # image questions: answers_mm, loaded only when its files are there
        if (Path(data_dir) / "mathvision").is_dir():
            from flageval.mock_model.answers_mm import MathVisionAnswerer

            self.mathvision = MathVisionAnswerer(data_dir, accuracy, seed) or None
        from flageval.mock_model.answers_ev import EVAnswerer

        self.ev = EVAnswerer(data_dir, accuracy, seed) or None  # embodied questions, when their files are there

    def right(self, key: str) -> bool:
        return intends_correct(key, self.accuracy, self.seed)

    # -- recognising --------------------------------------------------------------------------------

    def _mmlu(self, text: str, system: str = "") -> tuple[str, int] | None:
        """The last question block: after the description and the last few-shot answer."""
        subject = _MMLU_SUBJECT.search(system or text)
        if not subject or not text.rstrip().endswith("Answer:"):
            return None
        start = subject.end() if not system else 0
        for shot in _MMLU_SHOT_END.finditer(text):
            start = max(start, shot.end())
        block = text[start:].strip()
        answer = self.mmlu.get((subject.group(1), block))
        if answer is None:
            return None
        key = mmlu_key(subject.group(1), block)
        return key, answer if self.right(key) else (answer + 1) % 4

    def _gsm8k(self, text: str) -> tuple[str, str] | None:
        question = text.rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:")
        if question not in self.gsm8k:
            return None
        key = gsm8k_key(question)
        answer = self.gsm8k[question]
        if self.right(key):
            return key, f"Let me compute it step by step.\n#### {answer}"
        number = answer.replace(",", "")
        wrong = str(int(number) + 1) if number.lstrip("-").isdigit() else answer + "1"
        return key, f"Let me compute it step by step.\n#### {wrong}"

    # -- Answerer -----------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        if self.mathvision is not None:
            found_mm = self.mathvision.recognise(messages)
            if found_mm:
                return found_mm
        if self.ev is not None:
            found_ev = self.ev.recognise(messages, body)
            if found_ev:
                return found_ev
        text = _last_user_text(messages)
        system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), "")
        found = self._mmlu(text, system)
        if found:
            return found[0], LETTERS[found[1]]
        answered = self._gsm8k(text)
        if answered:
            return answered
        return "unknown", "I do not know."

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if body.get("echo"):
            return self._scored_continuation(prompt, body)
        found = self._mmlu(prompt)
        if found:
            return found[0], {"text": " " + LETTERS[found[1]], "finish_reason": "stop", "logprobs": None}
        answered = self._gsm8k(prompt)
        key, text = answered if answered else ("unknown", " I do not know.")
        return key, {"text": " " + text, "finish_reason": "stop", "logprobs": None}

    def _scored_continuation(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An echoed prompt with logprobs: the intended choice's continuation is the likely one."""
        context, _, letter = prompt.rpartition(" ")
        found = self._mmlu(context) if letter in LETTERS else None
        key = found[0] if found else "unknown"
        likely = found is not None and LETTERS[found[1]] == letter
        tokens = _TOKEN.findall(context) + [" " + letter] + ["\n"]
        logprobs: list[float | None] = [None] + [-0.5] * (len(tokens) - 1)
        logprobs[-2] = -0.1 if likely else -3.0
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        choice = {
            "text": prompt + "\n",
            "finish_reason": "length",
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": logprobs,
                "top_logprobs": [None] + [{t: lp} for t, lp in zip(tokens[1:], logprobs[1:])],
                "text_offset": offsets,
            },
        }
        return key, choice


def default_answerer(data_dir: Path, accuracy: float = 0.8, seed: int = 0) -> Answerer:
    return BenchmarkAnswerer(data_dir, accuracy, seed)


def intended_accuracy(dataset: str, data_dir: Path, accuracy: float, seed: int, limit: int | None = None) -> float:
    """The accuracy (percent) the reference model means to score on a dataset's first `limit` samples."""
    if dataset == "gsm8k":
        docs = read_jsonl(Path(data_dir) / "gsm8k" / "test.jsonl", ("question",))[:limit]
        keys = [gsm8k_key(d["question"]) for d in docs]
    elif dataset == "mmlu":
        keys = []
        for path in sorted((Path(data_dir) / "mmlu" / "test").glob("*_test.csv")):
            subject = path.name.removesuffix("_test.csv").replace("_", " ")
            keys += [mmlu_key(subject, _mmlu_block(row)) for row in read_csv(path, MMLU_HEADER)[:limit]]
    elif dataset == "mathvision":
        from flageval.mock_model.answers_mm import intended_accuracy_mm

        return intended_accuracy_mm(Path(data_dir), accuracy, seed, limit)
    elif dataset in EV_DATASETS:
        return intended_accuracy_ev(dataset, Path(data_dir), accuracy, seed, limit)
    else:
        raise ValueError(f"no intended accuracy for {dataset}")
    return round(100.0 * sum(intends_correct(k, accuracy, seed) for k in keys) / len(keys), 2)
