"""The reference model's knowledge of MathVision: it recognises a problem from the request's text,
checks that the problem's picture arrived in its place (a base64 data URL decoding to an image of the
file's size), and answers in FlagEvalMM's expected form, `\\boxed{…}`, right exactly when
`intends_correct` says so. Without the right picture it says it cannot see it (a reply that scores
wrong) and counts the fault by kind in `image_faults`.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from flageval.datasets.files import read_jsonl
from flageval.datasets.images import (
    PLACEHOLDER,
    content_parts,
    decode_data_url,
    image_size,
    layout,
)
from flageval.datasets.mathvision import DEFAULT_SPLIT, prompt_text
from flageval.datasets.mm import percent
from flageval.mock_model.answerer import Answerer, intends_correct

LETTERS = "ABCDE"
CANNOT_SEE = "I cannot see the picture this question is about, so I cannot solve it."
_SPACE = re.compile(r"\s+")


def problem_key(problem_id: str) -> str:
    return f"mathvision:{problem_id}"


def text_key(text: str) -> str:
    """The request text with placeholders and whitespace removed: the same however the parts are cut."""
    return _SPACE.sub("", PLACEHOLDER.sub("", text))


def _variant(key: str) -> int:
    return hashlib.sha1(key.encode()).digest()[0] % 3


def boxed_reply(key: str, answer: str) -> str:
    """A few phrasings FlagEvalMM's extraction reads, picked per problem."""
    return (
        f"\\boxed{{{answer}}}",
        f"Looking at the figure step by step, the answer is \\boxed{{{answer}}}.",
        f"Let me work it out from the picture.\n\nFinal: $\\boxed{{{answer}}}$",
    )[_variant(key)]


def wrong_answer(target: str, multiple_choice: bool) -> str:
    """An answer no FlagEvalMM rule accepts for `target` (not equal, target not a substring of it)."""
    if multiple_choice or (len(target) == 1 and target.upper() in LETTERS):
        return LETTERS[(LETTERS.index(target.upper()) + 1) % len(LETTERS)]
    tuple_match = re.fullmatch(r"\((-?\d+),(-?\d+)\)", target)
    if tuple_match:
        a, b = tuple_match.groups()
        return f"({int(a) + 1},{int(b) + 1})"
    try:
        value = Fraction(target)
    except (ValueError, ZeroDivisionError):
        return target + "1" if target else "1"
    step = 1
    while True:
        candidate = value + step
        text = str(candidate.numerator) if candidate.denominator == 1 else str(float(candidate))
        if target not in text.lower():
            return text
        step += 1


def sent_picture(part: dict[str, Any]) -> tuple[Any, str | None]:
    """(decoded PIL picture, fault) of one image content part."""
    from PIL import Image

    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
    if not isinstance(url, str):
        return None, "no url"
    try:
        _, data = decode_data_url(url)
    except ValueError:
        return None, "not a data URL"
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img, None
    except Exception:  # noqa: BLE001 - whatever the bytes are, they are not a picture
        return None, "undecodable"


def sent_picture_size(part: dict[str, Any]) -> tuple[tuple[int, int] | None, str | None]:
    """(decoded size, fault) of one image content part."""
    img, fault = sent_picture(part)
    return (img.size if img is not None else None), fault


def user_content(messages: list[dict[str, Any]]) -> Any:
    """The content of the last user message."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    return None


def sent_problem(messages: list[dict[str, Any]], by_text: dict[str, list[Any]], image_fault: Any,
                 image_faults: Counter) -> tuple[Any, bool] | None:
    """The known problem a request names by its text and pictures: (problem, True); (the first problem
    with that text, False) when no candidate's pictures arrived right (counted in image_faults, by the
    first candidate's fault); None for a text no problem has. image_fault(problem, content) -> str | None."""
    content = user_content(messages)
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    else:
        text = str(content or "")
    candidates = by_text.get(text_key(text))
    if not candidates:
        return None
    faults = [image_fault(p, content) for p in candidates]
    chosen = next((p for p, fault in zip(candidates, faults) if fault is None), None)
    if chosen is None:
        image_faults[faults[0] or "wrong picture"] += 1
        return candidates[0], False
    return chosen, True


@dataclass(frozen=True)
class _Problem:
    id: str
    target: str
    multiple_choice: bool
    image: Path | None
    layout: tuple[str, ...]


class MathVisionAnswerer:
    """Answers MathVision problems of one split from the files in data_dir/mathvision."""

    def __init__(self, data_dir: Path, accuracy: float = 0.8, seed: int = 0, split: str = DEFAULT_SPLIT):
        self.accuracy, self.seed = accuracy, seed
        self.by_text: dict[str, list[_Problem]] = {}
        self.image_faults: Counter[str] = Counter()
        self._sizes: dict[Path, tuple[int, int] | None] = {}
        root = Path(data_dir) / "mathvision"
        path = root / f"{split}.jsonl"
        if not path.is_file():
            return
        for row in read_jsonl(path, ("id", "question", "options", "answer", "image")):
            text = prompt_text(row)
            image = root / row["image"] if row["image"] else None
            parts = content_parts(text, ["data:"] if image else [])
            problem = _Problem(str(row["id"]), str(row["answer"]), bool(row["options"]), image, tuple(layout(parts)))
            self.by_text.setdefault(text_key(text), []).append(problem)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_text.values())

    def right(self, key: str) -> bool:
        return intends_correct(key, self.accuracy, self.seed)

    def file_size(self, path: Path) -> tuple[int, int] | None:
        if path not in self._sizes:
            try:
                self._sizes[path] = image_size(path)
            except Exception:  # noqa: BLE001 - an unreadable file matches no picture
                self._sizes[path] = None
        return self._sizes[path]

    def image_fault(self, problem: _Problem, content: Any) -> str | None:
        """Why the request does not carry the problem's picture in its place (None: it does)."""
        if not isinstance(content, list):
            return "no image"
        kinds = tuple(layout([p for p in content if isinstance(p, dict)]))
        if "image_url" not in kinds:
            return "no image"
        if kinds != problem.layout:
            return "image misplaced"
        expected = self.file_size(problem.image) if problem.image else None
        for part in content:
            if part.get("type") != "image_url":
                continue
            size, fault = sent_picture_size(part)
            if fault:
                return fault
            if size != expected:
                return "wrong picture"
        return None

    def recognise(self, messages: list[dict[str, Any]]) -> tuple[str, str] | None:
        """(sample key, answer) for a MathVision request; None when the text is no known problem."""
        found = sent_problem(messages, self.by_text, self.image_fault, self.image_faults)
        if found is None:
            return None
        chosen, seen = found
        if not seen:
            return problem_key(chosen.id), CANNOT_SEE
        key = problem_key(chosen.id)
        answer = chosen.target if self.right(key) else wrong_answer(chosen.target, chosen.multiple_choice)
        return key, boxed_reply(key, answer)

    # -- Answerer -----------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        found = self.recognise(messages)
        return found if found else ("unknown", "I do not know.")

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "unknown", {"text": " I do not know.", "finish_reason": "stop", "logprobs": None}


class WithMathVision:
    """An answerer that tries MathVision first and hands everything else to `base`."""

    def __init__(self, base: Answerer, mathvision: MathVisionAnswerer):
        self.base, self.mathvision = base, mathvision

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        return self.mathvision.recognise(messages) or self.base.chat(messages, body)

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self.base.completion(prompt, body)


def with_mathvision(base: Answerer, data_dir: Path, accuracy: float = 0.8, seed: int = 0) -> Answerer:
    """`base` plus MathVision answers when data_dir holds MathVision files (else `base` itself)."""
    mathvision = MathVisionAnswerer(data_dir, accuracy, seed)
    return WithMathVision(base, mathvision) if len(mathvision) else base


def intended_accuracy_mm(data_dir: Path, accuracy: float, seed: int = 0, limit: int | None = None,
                         split: str = DEFAULT_SPLIT) -> float:
    """The MathVision accuracy (percent) the reference model means to score on the first `limit` problems."""
    rows = read_jsonl(Path(data_dir) / "mathvision" / f"{split}.jsonl", ("id",))[:limit]
    right = sum(intends_correct(problem_key(str(row["id"])), accuracy, seed) for row in rows)
    return percent(right, len(rows))


__all__ = ["CANNOT_SEE", "MathVisionAnswerer", "WithMathVision", "boxed_reply", "intended_accuracy_mm",
           "problem_key", "sent_picture", "sent_picture_size", "user_content", "with_mathvision", "wrong_answer"]
