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
its embodied_verse rule: "(x, y)" tuples (and "(x0, y0, x1, y1)" boxes) from the last line of the
answer, the mask averaged under them (datasets.points; tasks/embodied_verse/evaluate.py).
Registering the class in flageval.datasets.DATASETS
and SUITES["EV"] makes it runnable; a dataset whose files are absent fails with the path it expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl
from flageval.datasets.mm import (
    AnswerScore,
    VisualDataset,
    VisualProblem,
    choice_answer,
    flagevalmm_prompt,
    rejection,
)
from flageval.datasets.points import mask_mean, parse_points, read_mask


class EVDataset(VisualDataset):
    """Base of EV datasets; see the module docstring for the file format."""

    domain = "EV"
    by_group = True
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
        found = parse_points(answer, width, height, last_line=True)
        mask = read_mask(problem.data["mask"], (width, height))
        return AnswerScore(extracted=found.summary(), scores={"accuracy": mask_mean(found, mask)})


__all__ = ["EVDataset"]
