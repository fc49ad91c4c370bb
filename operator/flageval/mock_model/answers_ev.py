"""The reference model's knowledge of the Embodied (EV) datasets found under its data directory.

It recognises a problem by the request's text, checks that each of the problem's pictures arrived in
its place (a data URL decoding to a picture of the source's size and look: an 8×8 thumbnail, since
PCA-EVAL repeats prompts over different scenes), and answers right exactly when `intends_correct` says
so: a letter (in one of several phrasings the parsers read), or points inside or outside the problem's
mask. Without the right pictures it says it cannot see them and counts the fault in `image_faults`.
With thinking asked for, the reply opens with a `<think>` block naming another option (or points
elsewhere), and PCA-EVAL's answer is wrapped in `<answer>…</answer>` as RoboBrain models write: scoring
the reasoning would change the score.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.datasets.images import content_parts, layout
from flageval.datasets.mm import percent
from flageval.datasets.options import lenient_choice
from flageval.mock_model.answerer import intends_correct
from flageval.mock_model.answers_mm import (
    CANNOT_SEE,
    sent_picture,
    sent_problem,
    text_key,
)

# The EV datasets the reference model knows; only those whose files are present are loaded.
EV_DATASETS = ("pca_eval_domestic", "erqa", "where2place")


def problem_key(dataset: str, problem_id: str) -> str:
    return f"{dataset}:{problem_id}"


def _variant(key: str, n: int) -> int:
    return hashlib.sha1(key.encode()).digest()[1] % n


def signature(img: Any) -> tuple[int, ...]:
    """An 8×8 grey thumbnail: tells two pictures of the same size apart, survives JPEG re-encoding."""
    return tuple(img.convert("L").resize((8, 8)).tobytes())


def same_picture(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 12


@dataclass
class _Problem:
    key: str
    layout: tuple[str, ...]
    pictures: tuple[Callable[[], Any], ...]  # open each source picture (PIL), in order
    answer: Callable[[bool, bool], str]  # (right, thinking) → reply
    order: tuple[int, ...] = ()  # which picture each image part of the request should be, in request order


def _opener(path: Path) -> Callable[[], Any]:
    def open_picture() -> Any:
        from PIL import Image

        return Image.open(path)

    return open_picture


def _record_opener(path: Path, offset: int, n: int) -> Callable[[], Any]:
    def open_picture() -> Any:
        import io

        from PIL import Image

        from flageval.datasets.tfrecord import parse_example, record_at

        return Image.open(io.BytesIO(parse_example(record_at(path, offset))["image/encoded"][n]))

    return open_picture


def _letter_answer(key: str, target: str) -> Callable[[bool, bool], str]:
    """ERQA: reasoning, then "Answer: X" on the last line, as its post-prompt asks."""
    wrong = "ABCD"[("ABCD".index(target) + 1) % 4] if target in "ABCD" else "A"

    def answer(right: bool, thinking: bool) -> str:
        chosen, other = (target, wrong) if right else (wrong, target)
        reply = f"The pictures show where things are; comparing them step by step.\nAnswer: {chosen}"
        if thinking:
            return f"<think>Answer: {other}</think>\n{reply}"
        return reply

    return answer


def pixel_text(x: int, y: int, width: int, height: int, as_fraction: bool) -> str:
    """A point's text that reads back as pixel (x, y): the pixel's centre as a fraction, or the pixel."""
    if not as_fraction:
        return f"({x}, {y})"
    fx, fy = f"{(x + 0.5) / width:.4f}", f"{(y + 0.5) / height:.4f}"
    assert int(float(fx) * width) == x and int(float(fy) * height) == y
    return f"({fx}, {fy})"


def _point_answer(key: str, picture: Path, mask_path: Path) -> Callable[[bool, bool], str]:
    """Where2Place: three points where the mask is fully white (right) or black (wrong)."""

    def pick(inside: bool) -> list[tuple[int, int]]:
        import numpy as np
        from PIL import Image

        with Image.open(mask_path) as img:
            mask = np.asarray(img)
        mask = mask[:, :, 0] if mask.ndim == 3 else mask
        ys, xs = np.nonzero(mask == 255) if inside else np.nonzero(mask == 0)
        if not len(xs):
            return []
        chosen = [int.from_bytes(hashlib.sha1(f"{key}:{n}".encode()).digest()[:4], "big") % len(xs) for n in range(3)]
        return [(int(xs[i]), int(ys[i])) for i in chosen]

    def answer(right: bool, thinking: bool) -> str:
        from flageval.datasets.images import image_size

        width, height = image_size(picture)
        as_fraction = _variant(key, 2) == 0
        def listed(points: list[tuple[int, int]]) -> str:
            return "[" + ", ".join(pixel_text(x, y, width, height, as_fraction) for x, y in points) + "]"

        reply = f"The free space is to be found from the picture.\nAnswer: {listed(pick(right))}"
        if thinking:
            return f"<think>Maybe here: {listed(pick(not right))}</think>\n{reply}"
        return reply

    return answer


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def choice_reply(key: str, options: list[str], chosen: int, other: int, thinking: bool) -> str:
    """A reply choosing options[chosen], phrased per problem; a thought naming `other` when thinking."""
    letter, text = _letter(chosen), options[chosen].strip()
    phrasings = (
        f"Reason: the goal and the objects in view decide it.\nAnswer: ({letter})",
        f"The robot should act on what the picture shows, so the answer is {letter}.",
        f"({letter}) {text}",
        text,
    )
    reply = phrasings[_variant(key, len(phrasings))]
    if lenient_choice(reply, options).letter != letter:  # an option text inside another: say the letter
        reply = phrasings[0]
    if thinking:
        return f"<think>At first glance the answer is ({_letter(other)}).</think>\n<answer>{reply}</answer>"
    return reply


class EVAnswerer:
    """Answers the EV datasets present in data_dir."""

    def __init__(self, data_dir: Path, accuracy: float = 0.8, seed: int = 0):
        self.accuracy, self.seed = accuracy, seed
        self.data_dir = Path(data_dir)
        self.by_text: dict[str, list[_Problem]] = {}
        self.image_faults: Counter[str] = Counter()
        self._expected: dict[tuple[str, int], tuple[tuple[int, int], tuple[int, ...]] | None] = {}
        from flageval.datasets import DatasetError, get_dataset, present

        for name in EV_DATASETS:
            if not present(name, self.data_dir):
                continue
            try:
                dataset = get_dataset(name, self.data_dir)
            except DatasetError:  # damaged files: the model does not know this dataset
                continue
            for problem in dataset.problems:
                self._add(self._problem(name, dataset, problem), problem.text)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_text.values())

    def _add(self, problem: _Problem, text: str) -> None:
        self.by_text.setdefault(text_key(text), []).append(problem)

    def _problem(self, name: str, dataset: Any, problem: Any) -> _Problem:
        key = problem_key(name, problem.id)
        placed = content_parts(problem.text, [str(n) for n in range(len(problem.images))])
        parts = tuple(layout(placed))
        order = tuple(int(p["image_url"]["url"]) for p in placed if p["type"] == "image_url")
        if name == "erqa":
            pictures = tuple(_record_opener(problem.data["file"], problem.data["offset"], n)
                             for n in range(len(problem.images)))
            return _Problem(key=key, layout=parts, pictures=pictures, answer=_letter_answer(key, problem.target),
                            order=order)
        pictures = tuple(_opener(p) for p in problem.images)
        if name == "where2place":
            return _Problem(key=key, layout=parts, pictures=pictures, order=order,
                            answer=_point_answer(key, problem.images[0], problem.data["mask"]))
        options = problem.data["actions"]
        gold = ord(problem.target) - ord("A")
        wrong = (gold + 1) % len(options)

        def answer(right: bool, thinking: bool) -> str:
            chosen, other = (gold, wrong) if right else (wrong, gold)
            return choice_reply(key, options, chosen, other, thinking)

        return _Problem(key=key, layout=parts, pictures=pictures, answer=answer, order=order)

    def expected(self, problem: _Problem, n: int) -> tuple[tuple[int, int], tuple[int, ...]] | None:
        """(size, signature) of the problem's n-th source picture; None when it cannot be read."""
        cache_key = (problem.key, n)
        if cache_key not in self._expected:
            try:
                with problem.pictures[n]() as img:
                    self._expected[cache_key] = (img.size, signature(img))
            except Exception:  # noqa: BLE001 - an unreadable source matches no picture
                self._expected[cache_key] = None
        return self._expected[cache_key]

    def right(self, key: str) -> bool:
        return intends_correct(key, self.accuracy, self.seed)

    def image_fault(self, problem: _Problem, content: Any) -> str | None:
        """Why the request does not carry the problem's pictures in their places (None: it does)."""
        if not isinstance(content, list):
            return "no image"
        parts = [p for p in content if isinstance(p, dict)]
        kinds = tuple(layout(parts))
        if "image_url" not in kinds:
            return "no image"
        if kinds != problem.layout:
            return "image misplaced"
        pictures = [p for p in parts if p.get("type") == "image_url"]
        for n, part in zip(problem.order, pictures, strict=True):
            img, fault = sent_picture(part)
            if fault:
                return fault
            expected = self.expected(problem, n)
            if expected is None or img.size != expected[0] or not same_picture(signature(img), expected[1]):
                return "wrong picture"
        return None

    def recognise(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str] | None:
        found = sent_problem(messages, self.by_text, self.image_fault, self.image_faults)
        if found is None:
            return None
        chosen, seen = found
        if not seen:
            return chosen.key, CANNOT_SEE
        kwargs = body.get("chat_template_kwargs")
        thinking = isinstance(kwargs, dict) and bool(kwargs.get("enable_thinking"))
        return chosen.key, chosen.answer(self.right(chosen.key), thinking)


def intended_accuracy_ev(dataset: str, data_dir: Path, accuracy: float, seed: int = 0,
                         limit: int | None = None) -> float:
    """The accuracy (percent) the reference model means to score on the first `limit` problems."""
    from flageval.datasets import get_dataset

    problems = get_dataset(dataset, data_dir, limit=limit).problems
    right = sum(intends_correct(problem_key(dataset, p.id), accuracy, seed) for p in problems)
    return percent(right, len(problems))


__all__ = ["EV_DATASETS", "EVAnswerer", "choice_reply", "intended_accuracy_ev", "problem_key"]
