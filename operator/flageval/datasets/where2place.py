"""Where2Place (RoboPoint's free-space pointing benchmark) in its own format.

Files under `where2place/`: `point_questions.jsonl` (one question a line: `question_id`, `image`, `text`,
optional `category`), `images/<image>`, and a mask per question, `masks/<image>` or, as RoboPoint's
summarize_vqa reads it, `masks/<NN>.jpg` with NN the line's position (00, 01, …). White is right.

Request: the picture first, then the question and FlagEvalMM's Where2Place instruction
(tasks/embodied_verse/process.py, `where2place_post_prompt`: normalised (x, y) tuples on the last line).
Scoring (datasets.points): `accuracy` = RoboPoint's — the mean over questions of the share of the
reply's points inside the mask; `embodied_verse_accuracy` = FlagEvalMM's embodied_verse rule — a
question right when that share, from the last line only, is ≥ 0.5. Points are read against the
picture's own size (RoboPoint assumes 640×480, the size of every Where2Place picture). Per category too.

A reply with no point scores 0 (as in both) and its record says so; a mask that is missing, unreadable
or not the picture's size fails its sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl
from flageval.datasets.images import ImageError, image_size
from flageval.datasets.mm import (
    AnswerScore,
    VisualDataset,
    VisualProblem,
    flagevalmm_prompt,
    percent,
    rejection,
)
from flageval.datasets.points import ACCEPT, mask_mean, parse_points, read_mask

QUESTIONS = "point_questions.jsonl"
# FlagEvalMM tasks/embodied_verse/process.py, where2place_post_prompt (a triple-quoted string ending in "\n").
POST_PROMPT = """Your task is to identify specific points in the image based on the question. Respond with a brief explanation if needed, followed by a list of 2D point coordinates.

Each point should be represented as a normalized (x, y) tuple, where both x and y values are floats between 0 and 1, corresponding to the position within the image (e.g., for a point at pixel (50, 75) in a 100*100 image, the normalized coordinate is (0.5, 0.75)).

Format your final answer strictly as follows on the last line of your response:
Answer: [(x1, y1), (x2, y2), ..., (xn, yn)]

Do not include additional text after this line.
"""


def prompt_text(question: str) -> str:
    return flagevalmm_prompt(f"{question}\n{POST_PROMPT}", has_image=True)


class Where2Place(VisualDataset):
    name = "where2place"
    domain = "EV"
    folder = "where2place"

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        return (Path(data_dir) / cls.folder / QUESTIONS).is_file()

    def load(self, mode: str | None) -> list[VisualProblem]:
        if mode not in (None, "generative"):
            raise DatasetError(f"{self.name} has no mode '{mode}'")
        path = self.root / QUESTIONS
        if not path.is_file():
            raise self.missing(path, "question file")
        problems, seen = [], set()
        for number, row in enumerate(read_jsonl(path, ("image", "text"))):
            problem_id = str(row.get("question_id", number))
            if problem_id in seen:
                raise DatasetError(f"{path}: question_id {problem_id} appears twice")
            seen.add(problem_id)
            image = self.root / "images" / str(row["image"])
            by_name = self.root / "masks" / str(row["image"])
            mask = by_name if by_name.is_file() else self.root / "masks" / f"{number:02d}.jpg"
            category = row.get("category")
            problems.append(VisualProblem(id=problem_id, text=prompt_text(str(row["text"])), images=(image,),
                                          target=str(mask.relative_to(self.root)),
                                          group=str(category) if category is not None else None,
                                          data={"mask": mask}))
        return problems

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        answer = answer.split("</think>", 1)[1] if "</think>" in answer else answer
        prefix = rejection(answer)
        if prefix is not None:
            return AnswerScore(extracted=None, scores={}, rejected=prefix)
        picture, mask_path = problem.images[0], problem.data["mask"]
        try:
            width, height = image_size(picture)
        except Exception as exc:  # noqa: BLE001 - its request could not have been sent either
            raise ImageError(f"image {picture} cannot be read: {exc}") from None
        mask = read_mask(mask_path, (width, height))
        whole = parse_points(answer, width, height)
        last = parse_points(answer, width, height, last_line=True)
        share, share_last = mask_mean(whole, mask), mask_mean(last, mask)
        return AnswerScore(extracted={**whole.summary(), "share": round(share, 4), "last_line_share": round(share_last, 4)},
                         scores={"accuracy": share, "embodied_verse_accuracy": float(share_last >= ACCEPT)})

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        kept, rejected = self.counted(records)
        metrics: dict[str, Any] = {}
        if kept:
            metrics["accuracy"] = percent(sum(r.scores["accuracy"] for r in kept), len(kept))
            metrics["embodied_verse_accuracy"] = percent(
                sum(r.scores.get("embodied_verse_accuracy", 0.0) for r in kept), len(kept))
            metrics.update(self.group_accuracies(kept))
        metrics["rejected"] = float(rejected)
        return metrics


__all__ = ["POST_PROMPT", "Where2Place", "prompt_text"]
