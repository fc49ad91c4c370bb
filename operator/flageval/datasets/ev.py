"""The Embodied (EV) domain: image questions answered by a choice or by points in the image.

An EV dataset is a folder under the data directory with a JSONL annotation file, one problem a line:

  id        unique id
  question  text; `<image N>` marks where the N-th image goes (without it, `<image 1>` is put first)
  images    list of image paths relative to the folder (or `image`: one path)
  and either
  options + answer       a multiple-choice problem: option texts, the answer letter (ERQA-like)
  mask + width + height  a pointing problem: a mask image (white = right), the image size the
                         normalised points refer to (Where2Place-like)
  group     optional sub-task; accuracy is also reported per group

A dataset is a subclass that names itself and its files, and may set the instruction text:

    class Where2Place(EVDataset):
        name = "where2place"
        folder = "where2place"
        post_prompt = "…Answer: [(x1, y1), …]"

Scoring follows FlagEvalMM: choices by its multiple-choice letter rule (BaseEvaluator), points by
parsing "(x, y)" tuples (and "(x0, y0, x1, y1)" boxes) from the last line of the answer and averaging
the mask under them (evaluator/point_utils.py). Registering the class in flageval.datasets.DATASETS
and SUITES["EV"] makes it runnable; a dataset whose files are absent fails with the path it expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl
from flageval.datasets.images import ImageError
from flageval.datasets.mm import (
    AnswerScore,
    VisualDataset,
    VisualProblem,
    choice_answer,
    flagevalmm_prompt,
    percent,
    rejection,
)

_TUPLE = re.compile(r"\(([-+]?\d+\.?\d*(?:,\s*[-+]?\d+\.?\d*)*?)\)")

Point = tuple[int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1, already clipped to the image


def text_points(text: str, width: int, height: int) -> tuple[list[Point], list[Box]]:
    """Points and boxes on the answer's last line. A number with a decimal point is a fraction of
    the image size; integers are pixels. Boxes stand for every pixel inside them."""
    line = text.strip().split("\n")[-1]
    points: list[Point] = []
    boxes: list[Box] = []
    for match in _TUPLE.findall(line):
        values = [float(v) if "." in v else int(v) for v in match.split(",")]
        fractional = any(isinstance(v, float) for v in values)
        if len(values) == 2:
            x, y = values
            if fractional:
                x, y = int(x * width), int(y * height)
            points.append((int(x), int(y)))
        elif len(values) == 4:
            x0, y0, x1, y1 = values
            if isinstance(values[0], float):  # FlagEvalMM looks at the first number only
                x0, y0, x1, y1 = int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)
            boxes.append((max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))))
    return points, boxes


def mask_score(points: list[Point], boxes: list[Box], mask_path: Path) -> float:
    """Mean mask value (0–1) under the points and box pixels; a point outside the mask counts 0."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(mask_path) as img:
            mask = np.asarray(img)
    except FileNotFoundError:
        raise ImageError(f"mask {mask_path} is missing") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable mask is this sample's fault
        raise ImageError(f"mask {mask_path} cannot be decoded: {exc}") from None
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    mask = mask / 255.0
    height, width = mask.shape
    total = 0.0
    count = len(points)
    for x, y in points:
        if 0 <= x < width and 0 <= y < height:
            total += float(mask[y, x])
    for x0, y0, x1, y1 in boxes:
        x1, y1 = min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            total += float(mask[y0:y1, x0:x1].sum())
            count += (x1 - x0) * (y1 - y0)
    return total / count if count else 0.0


class EVDataset(VisualDataset):
    """Base of EV datasets; see the module docstring for the file format."""

    domain = "EV"
    annotation = "data.jsonl"
    pre_prompt = ""
    post_prompt = ""

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        return (Path(data_dir) / cls.folder / cls.annotation).is_file()

    def load(self, mode: str | None) -> list[VisualProblem]:
        if mode not in (None, "generative"):
            raise DatasetError(f"{self.name} has no mode '{mode}'")
        path = self.root / self.annotation
        if not path.is_file():
            raise self.missing(path, "annotation file")
        return [self.problem(row, path) for row in read_jsonl(path, ("id", "question"))]

    def problem(self, row: dict[str, Any], path: Path) -> VisualProblem:
        images = row.get("images") or ([row["image"]] if row.get("image") else [])
        if not isinstance(images, list):
            raise DatasetError(f"{path}: problem {row['id']} has images that are not a list")
        options = row.get("options") or []
        if options:
            kind: dict[str, Any] = {"kind": "choice"}
            target = str(row.get("answer", ""))
            if not re.fullmatch(r"[A-Z]", target.upper()):
                raise DatasetError(f"{path}: problem {row['id']} needs a letter answer, got {target!r}")
        elif row.get("mask"):
            if not (isinstance(row.get("width"), int) and isinstance(row.get("height"), int)):
                raise DatasetError(f"{path}: problem {row['id']} has a mask but no integer width and height")
            kind = {"kind": "points", "mask": self.root / row["mask"], "size": (row["width"], row["height"])}
            target = row["mask"]
        else:
            raise DatasetError(f"{path}: problem {row['id']} has neither options nor a mask")
        text = flagevalmm_prompt(row["question"], options, has_image=bool(images), pre_prompt=self.pre_prompt,
                                 post_prompt=self.post_prompt)
        return VisualProblem(id=str(row["id"]), text=text, images=tuple(self.root / p for p in images),
                             target=target, group=row.get("group"), data=kind)

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        answer = answer.split("</think>", 1)[1] if "</think>" in answer else answer
        prefix = rejection(answer)
        if prefix is not None:
            return AnswerScore(extracted=None, scores={}, rejected=prefix)
        if problem.data["kind"] == "choice":
            letter = choice_answer(answer)
            return AnswerScore(extracted=letter, scores={"accuracy": float(letter == problem.target.upper())})
        width, height = problem.data["size"]
        points, boxes = text_points(answer, width, height)
        value = mask_score(points, boxes, problem.data["mask"])
        return AnswerScore(extracted={"points": points[:50], "boxes": boxes[:50]}, scores={"accuracy": value})

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        kept, rejected = self.counted(records)
        metrics: dict[str, float] = {}
        if kept:
            metrics["accuracy"] = percent(sum(r.scores["accuracy"] for r in kept), len(kept))
            metrics.update(self.group_accuracies(kept))
        metrics["rejected"] = float(rejected)
        return metrics


__all__ = ["EVDataset", "mask_score", "text_points"]
