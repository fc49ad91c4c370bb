"""The reference model's knowledge of lm-eval tasks: it builds each task's requests from the same task
files the evaluator uses and answers each document right exactly when `intends_correct` says so —
generated answers in the form the task's filters read, loglikelihood requests with the intended choice
the likely one (both by sum and per character, so acc and acc_norm agree)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.mock_model.answerer import Answerer, intends_correct

LIKELY, UNLIKELY = -0.01, -60.0  # a continuation's total logprob: intended choice, every other
_TOKEN = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


def _fingerprint(value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return hashlib.sha1(text.encode()).digest()


def sample_key(task: str, doc_id: int) -> str:
    return f"{task}:{doc_id}"


@dataclass(frozen=True)
class _Choice:
    key: str
    context_chars: int
    likely: bool


def _gold(task: Any, doc: dict) -> list[int]:
    """Indices of the right choices, as lm-eval's process_results reads them."""
    if "mc2_targets" in doc:  # truthfulqa_mc2: every true answer
        return [i for i, label in enumerate(doc["mc2_targets"]["labels"]) if label == 1]
    choices = task.doc_to_choice(doc)
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else 0
    return list(gold) if isinstance(gold, list) else [int(gold)]


def answer_text(task_name: str, target: str, right: bool) -> str:
    """A generated answer in the form the task's filters and process_results read."""
    shown = target if right else _wrong(target)
    if task_name.startswith("bbh_cot"):
        return f"Let's think step by step.\nEach option was checked in turn. So the answer is {shown}."
    if task_name.startswith(("minerva_math", "hendrycks_math")):
        return f"Solving it gives the result.\nFinal Answer: The final answer is {shown}. I hope it is correct."
    if task_name.startswith("aime"):
        return f"Working through the cases gives $\\boxed{{{shown}}}$."
    if task_name.startswith("gsm8k"):
        return f"Let me compute it step by step.\n#### {shown}"
    return shown


def _wrong(target: str) -> str:
    text = target.strip()
    if text.lstrip("-").isdigit():
        return str(int(text) + 1)
    options = {"True": "False", "False": "True", "Yes": "No", "No": "Yes", "valid": "invalid", "invalid": "valid"}
    if text in options:
        return options[text]
    letter = re.fullmatch(r"\(([A-R])\)", text)
    if letter:
        return f"({'B' if letter.group(1) == 'A' else 'A'})"
    return "no answer found"


class TaskAnswerer:
    """Answers the requests of the named lm-eval tasks (first `limit` documents of each); hands
    everything else to `fallback`."""

    def __init__(self, data_dir: Path, tasks: Sequence[str], accuracy: float = 0.8, seed: int = 0,
                 fallback: Answerer | None = None, limit: int | None = None,
                 include_paths: Sequence[Path] = ()):
        from flageval.datasets.base import DatasetError
        from flageval.datasets.lmeval import LMEvalTask

        self.accuracy, self.seed, self.fallback = accuracy, seed, fallback
        self.generated: dict[bytes, tuple[str, str]] = {}
        self.scored: dict[bytes, _Choice] = {}
        self.keys: dict[str, list[tuple[int, str]]] = {}  # name → (doc id, sample key) of every document
        for name in tasks:
            for kind in ("chat", "completions"):
                try:
                    dataset = LMEvalTask(name, data_dir, limit, kind=kind, include_paths=include_paths,
                                         allow_code_execution=True)
                except DatasetError:
                    continue  # e.g. a loglikelihood task has no chat form
                keys = []
                for item in dataset.items(kind):
                    task_name, doc_id, doc, instances = item.meta
                    key = sample_key(task_name, doc_id)
                    keys.append((doc_id, key))
                    self._learn(dataset.tasks[task_name], task_name, doc, instances, item.bodies, key)
                self.keys[name] = keys

    def right(self, key: str) -> bool:
        return intends_correct(key, self.accuracy, self.seed)

    def _learn(self, task: Any, task_name: str, doc: dict, instances: list, bodies: list[dict], key: str) -> None:
        if instances[0].request_type == "generate_until":
            body = bodies[0]
            target = task.doc_to_target(doc)
            if task.config.doc_to_choice is not None and isinstance(target, int):
                target = task.doc_to_choice(doc)[target]
            text = self.write(task_name, doc, str(target[0] if isinstance(target, list) else target), self.right(key))
            self.generated[_fingerprint(body.get("messages") or body.get("prompt"))] = (key, text)
            return
        gold = _gold(task, doc)
        right = self.right(key)
        n = len(instances)
        likely = set(gold) if right else ({i for i in range(n) if i not in gold} or {(gold[0] + 1) % n})
        if not right and "mc2_targets" not in doc:
            likely = {min(likely)}
        for i, (instance, body) in enumerate(zip(instances, bodies)):
            self.scored[_fingerprint(body["prompt"])] = _Choice(key, len(instance.args[0]), i in likely)

    def write(self, task_name: str, doc: dict, target: str, right: bool) -> str:
        return answer_text(task_name, target, right)

    def intended(self, name: str, limit: int | None = None) -> float:
        """Percent of the task's (or group's) first `limit` documents per task the model means to answer right."""
        keys = [key for doc_id, key in self.keys[name] if limit is None or doc_id < limit]
        return round(100.0 * sum(self.right(k) for k in keys) / len(keys), 2)

    # -- Answerer -----------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        found = self.generated.get(_fingerprint(messages))
        if found:
            return found
        if self.fallback is not None:
            return self.fallback.chat(messages, body)
        return "unknown", "I do not know."

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if body.get("echo"):
            choice = self.scored.get(_fingerprint(prompt))
            if choice is not None:
                return choice.key, _echo(prompt, choice)
        else:
            found = self.generated.get(_fingerprint(prompt))
            if found:
                return found[0], {"text": found[1], "finish_reason": "stop", "logprobs": None}
        if self.fallback is not None:
            return self.fallback.completion(prompt, body)
        return "unknown", {"text": "I do not know.", "finish_reason": "stop", "logprobs": None}


def _echo(prompt: str, choice: _Choice) -> dict[str, Any]:
    """The echoed prompt's tokens with logprobs: context tokens -0.5 each; the continuation's tokens share
    LIKELY or UNLIKELY; each token's top alternative is itself when likely (so is_greedy holds)."""
    context, continuation = prompt[:choice.context_chars], prompt[choice.context_chars:]
    context_tokens = _TOKEN.findall(context)
    continuation_tokens = _TOKEN.findall(continuation) or [continuation]
    share = (LIKELY if choice.likely else UNLIKELY) / len(continuation_tokens)
    tokens = context_tokens + continuation_tokens + ["\n"]
    logprobs: list[float | None] = [-0.5] * len(context_tokens) + [share] * len(continuation_tokens) + [-1.0]
    if logprobs:
        logprobs[0] = None
    tops: list[dict[str, float] | None] = [None]
    for token, logprob in zip(tokens[1:], logprobs[1:]):
        tops.append({token: logprob} if choice.likely or logprob != share else {token: logprob, " ": -0.001})
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"text": prompt + "\n", "finish_reason": "length",
            "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}}
