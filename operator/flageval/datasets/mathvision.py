"""MATH-Vision as FlagEvalMM evaluates it (tasks/math_vision: process.py, evaluate.py; unchanged since 9c0884f).

Request: one user message, the instruction then the question with its options, the problem's image
in place of its `<image 1>` placeholder (RGB → JPEG 95 → base64), `max_tokens` 32768 and no
temperature (FlagEvalMM's http client defaults).

Scoring, per reply (reasoning removed; text after the first `</think>`):
  replies starting "Error code" / "Can not answer because of" / "Input data may contain inappropriate
  content" are rejected: out of the denominator. Otherwise the answer is extracted (letter shortcut,
  "is " number rule, answer flags, last `\\boxed{}`, find_math_answer, clean_answer) and is right when
  `is_equal` (2-decimal numeric equality through latex2sympy) holds or, FlagEvalMM's lenient rule, the
  reference is a substring of the extracted answer; for multiple-choice problems a wrong answer gets a
  second chance from the letter found in the raw reply.
accuracy = round(right / n * 100, 2). Also reported: strict_accuracy (without the substring rule),
verdict_differs (samples the two disagree on) and rejected.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl
from flageval.datasets.images import ImageSettings
from flageval.datasets.latex_eval import Comparer, is_equal
from flageval.datasets.mm import (
    DEFAULT_MAX_TOKENS,
    AnswerScore,
    VisualDataset,
    VisualProblem,
    choice_answer,
    flagevalmm_prompt,
    percent,
    rejection,
)
from flageval.engine.types import EndpointKind

INSTRUCTION = ('Please solve the problem and put your answer in one "\\boxed{}". If it is a multiple choice '
               'question, only one letter is allowed in the "\\boxed{}".')
PRE_PROMPT = "\n" + INSTRUCTION + "\n"  # math_vision_test.py's triple-quoted pre_prompt
SPLITS = ("testmini", "test")
DEFAULT_SPLIT = "testmini"
ENV_SPLIT = "FLAGEVAL_MATHVISION_SPLIT"
FIELDS = ("id", "question", "options", "answer", "image")

# ---- the prompt (process.py, then VqaBaseDataset.build_prompt and the task's PromptTemplate) ------


def question_text(question: str) -> str:
    """process.py: a question with exactly one "<image" gets "<image 1>" (placeholders are spaced)."""
    return question.replace("<image", "<image ") if question.count("<image") == 1 else question


def prompt_text(row: dict[str, Any]) -> str:
    return flagevalmm_prompt(question_text(row["question"]), row.get("options") or [],
                             has_image=bool(row.get("image")), pre_prompt=PRE_PROMPT, post_prompt="")


# ---- answer extraction (evaluate.py get_result, find_math_answer, _strip_string, clean_answer) -----

ANSWER_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be", "answer:")
_LAST_BOX = re.compile("oxed{(.*)}", flags=re.DOTALL)  # greedy: to the last "}" of the text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _letter_shortcut(answer: str) -> str:
    for letter in "ABCDE":
        if (answer.endswith((f" {letter}.", f" ({letter}).")) or
                answer.startswith((f"{letter}\n", f"({letter})\n", f"({letter}) {letter}\n"))):
            answer = letter
    return answer


def _after_flag(answer: str, flag: str) -> str:
    cut = answer.split(flag)[-1].strip()  # stripped whether or not the flag is there
    if flag in answer:
        cut = cut.split("\n")[0].split(". ")[0]
    return cut


def pre_extract(answer: str) -> str:
    """get_result's steps before find_math_answer."""
    answer = _letter_shortcut(answer)
    tail = answer.split("is ")[-1].rstrip(".")
    if _is_number(tail):
        answer = tail
    if "oxed{" not in answer:
        for flag in ANSWER_FLAGS:
            answer = _after_flag(answer, flag)
            answer = _after_flag(answer, flag.replace("the", "The"))
    elif answer.count("oxed{") > 1:
        answer = "\\boxed{" + answer.split("oxed{")[-1]
    return answer


def _fix_sqrt(text: str) -> str:
    """\\sqrt2 → \\sqrt{2}: the first character after each \\sqrt gets braces."""
    if "\\sqrt" not in text:
        return text
    head, *rest = text.split("\\sqrt")
    pieces = [head]
    for piece in rest:
        pieces.append("\\sqrt" + piece if piece[:1] in ("", "{") else "\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(pieces)


def _fix_fracs(text: str) -> str:
    """\\frac12 → \\frac{1}{2}; a \\frac followed by fewer than two characters leaves the text unchanged."""
    head, *rest = text.split("\\frac")
    out = [head]
    for piece in rest:
        out.append("\\frac")
        if piece[:1] == "{":
            out.append(piece)
            continue
        if len(piece) < 2:
            return text
        numerator, second, tail = piece[0], piece[1], piece[2:]
        out.append("{" + numerator + "}" + (second if second == "{" else "{" + second + "}") + tail)
    return "".join(out)


def _fix_a_slash_b(text: str) -> str:
    """An integer fraction a/b, written canonically, becomes \\frac{a}{b}."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def strip_string(text: str) -> str:
    """_strip_string."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("$", "")):
        text = text.replace(old, new)
    text = text.split("\\text{ ")[0]  # units on the right
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    if len(text.split("=")) == 2:
        text = text.split("=")[-1]
    if len(text.split("\\approx")) == 2:
        text = text.split("\\approx")[-1]
    if "sqrt" in text:
        text = _fix_sqrt(text)
    text = text.replace(" ", "")
    if "sqrt" in text:  # FlagEvalMM tests for sqrt, not frac, before fixing fractions
        text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


_FIND_REPLACEMENTS = (
    (" ", ""), ("\\,", ""), ("∞", "\\infty"), ("+\\infty", "\\infty"), ("\\\\", "\\"), ("\n", ""),
    ("\\text", ""), ("\\mbox", ""), ("bmatrix", "pmatrix"), ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""),
    ("^\\circ", ""), ("{m}^3", ""), ("m^3", ""), ("{units}", ""), ("units", ""), ("{km}", ""), ("km", ""),
)


def find_math_answer(text: str) -> str:
    text = text.lower().replace("{}", "")
    boxed = _LAST_BOX.findall(text)
    answer = boxed[-1] if boxed else text
    answer = answer.split("=")[-1].split("\\approx")[-1]
    for old, new in _FIND_REPLACEMENTS:
        answer = answer.replace(old, new)
    return strip_string(answer)


def clean_answer(answer: str) -> str:
    for letter in "abcde":
        answer = answer.replace(f"({letter})", letter)
    for letter in "abcde":
        answer = answer.replace(f"{{{letter}}}", letter)
    return answer.strip().lstrip(":").rstrip(".")


def extract_answer(answer: str) -> str:
    """The model answer FlagEvalMM compares (always lower case)."""
    return clean_answer(find_math_answer(pre_extract(answer)))


@dataclass
class ReplyGrade:
    """How FlagEvalMM's get_result grades one MathVision reply, and why."""

    answer: str  # the extracted model answer
    correct: bool  # FlagEvalMM's verdict
    strict: bool  # without the substring rule
    rule: str | None  # what made it right: "equal", "substring", "choice"
    choice: str | None = None  # the letter the multiple-choice fallback read, when it ran
    note: str | None = None  # a latex comparison decided by its deadline
    rejected: str | None = None


def after_think(reply: str) -> str:
    """model_adapter: the answer is what follows the first </think>."""
    return reply.split("</think>", 1)[1] if "</think>" in reply else reply


def grade_reply(target: str, reply: str, multiple_choice: bool, comparer: Comparer | None = None) -> ReplyGrade:
    """One reply graded as get_result grades it, plus the strict verdict."""
    raw = after_think(reply)
    prefix = rejection(raw)
    if prefix is not None:
        return ReplyGrade(answer="", correct=False, strict=False, rule=None, rejected=prefix)
    answer = extract_answer(raw)
    equal, note = is_equal(target, answer, comparer)
    substring = target in answer
    correct, strict = equal or substring, equal
    rule = "equal" if equal else "substring" if substring else None
    choice = None
    if multiple_choice and not strict:
        choice = choice_answer(raw)
        if choice == target.upper():
            strict = True
            if not correct:
                correct, rule = True, "choice"
    return ReplyGrade(answer=answer, correct=correct, strict=strict, rule=rule, choice=choice, note=note)


# ---- the dataset ----------------------------------------------------------------------------------


def _split(mode: str | None, split: str | None) -> str:
    if mode not in (None, "generative", *SPLITS):
        raise DatasetError(f"mathvision has no mode '{mode}'; modes: generative, or a split ({', '.join(SPLITS)})")
    chosen = split or (mode if mode in SPLITS else None) or os.environ.get(ENV_SPLIT) or DEFAULT_SPLIT
    if not re.fullmatch(r"[\w.-]+", chosen):
        raise DatasetError(f"mathvision split '{chosen}' is not a file name")
    return chosen


class MathVision(VisualDataset):
    name = "mathvision"
    domain = "MM"
    folder = "mathvision"

    def __init__(self, data_dir: Path, limit: int | None = None, *, mode: str | None = None,
                 kind: EndpointKind = "chat", split: str | None = None, images: ImageSettings | None = None,
                 max_tokens: int | None = DEFAULT_MAX_TOKENS, comparer: Comparer | None = None):
        self.split = _split(mode, split)
        if importlib.util.find_spec("latex2sympy2") is None:
            raise DatasetError("mathvision needs latex2sympy2 to compare answers: pip install 'flageval-operator[mm]'")
        if importlib.util.find_spec("PIL") is None:
            raise DatasetError("mathvision needs Pillow to encode images: pip install 'flageval-operator[mm]'")
        self.comparer = comparer
        super().__init__(data_dir, limit, mode=mode, kind=kind, images=images, max_tokens=max_tokens)

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        split = os.environ.get(ENV_SPLIT) or DEFAULT_SPLIT
        return (Path(data_dir) / cls.folder / f"{split}.jsonl").is_file()

    def load(self, mode: str | None) -> list[VisualProblem]:
        path = self.root / f"{self.split}.jsonl"
        if not path.is_file():
            raise self.missing(path, f"split '{self.split}'")
        if not (self.root / "images").is_dir():
            raise self.missing(self.root / "images", "image folder")
        problems, seen = [], set()
        for row in read_jsonl(path, FIELDS):
            problem_id = str(row["id"])
            if problem_id in seen:
                raise DatasetError(f"{path}: problem id {problem_id} appears twice")
            seen.add(problem_id)
            options = row["options"] or []
            if not isinstance(options, list):
                raise DatasetError(f"{path}: problem {problem_id} has options that are not a list")
            problems.append(VisualProblem(
                id=problem_id,
                text=prompt_text(row),
                images=(self.root / row["image"],) if row["image"] else (),
                target=str(row["answer"]),
                group=row.get("subject"),
                data={"multiple_choice": bool(options), "level": row.get("level")},
            ))
        return problems

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        grade = grade_reply(problem.target, answer, problem.data["multiple_choice"], self.comparer)
        if grade.rejected is not None:
            return AnswerScore(extracted=None, scores={}, rejected=grade.rejected)
        extracted = {"answer": grade.answer, "rule": grade.rule}
        if grade.choice is not None:
            extracted["choice"] = grade.choice
        if grade.note is not None:
            extracted["note"] = grade.note
        return AnswerScore(extracted=extracted,
                         scores={"accuracy": float(grade.correct), "strict_accuracy": float(grade.strict)})

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        kept, rejected = self.counted(records)
        metrics: dict[str, float] = {}
        if kept:
            metrics["accuracy"] = percent(sum(r.scores["accuracy"] for r in kept), len(kept))
            metrics["strict_accuracy"] = percent(sum(r.scores.get("strict_accuracy", 0.0) for r in kept), len(kept))
        metrics["verdict_differs"] = float(sum(r.scores["accuracy"] != r.scores.get("strict_accuracy") for r in kept))
        metrics["rejected"] = float(rejected)
        return metrics


__all__ = [
    "INSTRUCTION",
    "PRE_PROMPT",
    "SPLITS",
    "MathVision",
    "ReplyGrade",
    "after_think",
    "clean_answer",
    "extract_answer",
    "find_math_answer",
    "grade_reply",
    "pre_extract",
    "prompt_text",
    "question_text",
    "strip_string",
]
