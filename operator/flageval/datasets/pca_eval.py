"""PCA-EVAL Domestic Robot (pkunlp-icler/PCA-EVAL, pca-eval/data/v1.0/Domestic Robot): 100 embodied
decisions in AI2-THOR kitchens. Each item: a picture, a goal, what the robot holds, candidate actions,
the gold `answer_index`.

Request: the picture then the item's own end-to-end prompt (`end2end_prompts.json`: goal, held objects,
"(A) … (B) …", "Please give reasons and the anwser."), in one user message as FlagEvalMM sends
images (JPEG-95 data URL in place of `<image 1>`, put first).

Scoring: the option the reply chose, read by the deterministic rules of `datasets.options` (the
published PCA-EVAL score uses a GPT judge instead); `accuracy` by the lenient rule, `strict_accuracy`
by the strict one. Rejected replies and failed samples are out of the denominator and counted in
`rejected`, as FlagEvalMM's filter_rejected does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.mm import (
    AnswerScore,
    VisualDataset,
    VisualProblem,
    flagevalmm_prompt,
    percent,
    rejection,
)
from flageval.datasets.options import answer_part, lenient_choice, strict_choice

META = "meta_data.json"
PROMPTS = "end2end_prompts.json"


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DatasetError(f"{path} is not a list of objects")
    return data


def prompt_text(prompt: str) -> str:
    """The user text: `<image 1>` first, then the item's prompt (VqaBaseDataset.build_prompt)."""
    return flagevalmm_prompt(prompt, has_image=True)


class PCAEvalDomestic(VisualDataset):
    name = "pca_eval_domestic"
    domain = "EV"
    folder = "pca_eval_domestic"

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        return (Path(data_dir) / cls.folder / META).is_file()

    def load(self, mode: str | None) -> list[VisualProblem]:
        if mode not in (None, "generative"):
            raise DatasetError(f"{self.name} has no mode '{mode}'")
        meta_path, prompts_path = self.root / META, self.root / PROMPTS
        for path, what in ((meta_path, "annotation file"), (prompts_path, "prompt file")):
            if not path.is_file():
                raise self.missing(path, what)
        prompts = {row.get("index"): row for row in _read_list(prompts_path)}
        problems = []
        for number, row in enumerate(_read_list(meta_path)):
            index = row.get("index", number)
            actions, gold = row.get("actions"), row.get("answer_index")
            if not (isinstance(actions, list) and actions and all(isinstance(a, str) for a in actions)):
                raise DatasetError(f"{meta_path}: item {index} has no list of actions")
            if not (isinstance(gold, int) and 0 <= gold < len(actions)):
                raise DatasetError(f"{meta_path}: item {index} has answer_index {gold!r} outside its {len(actions)} actions")
            prompt = prompts.get(index)
            if prompt is None or not isinstance(prompt.get("prompt"), str):
                raise DatasetError(f"{prompts_path}: no prompt for item {index}")
            image = prompt.get("image") or row.get("image")
            if not isinstance(image, str):
                raise DatasetError(f"{meta_path}: item {index} has no image")
            problems.append(VisualProblem(
                id=str(index), text=prompt_text(prompt["prompt"]), images=(self.root / image,),
                target=chr(ord("A") + gold), data={"actions": actions, "goal": row.get("question")},
            ))
        return problems

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        prefix = rejection(answer_part(answer))
        if prefix is not None:
            return AnswerScore(extracted=None, scores={}, rejected=prefix)
        actions = problem.data["actions"]
        lenient, strict = lenient_choice(answer, actions), strict_choice(answer, actions)
        return AnswerScore(
            extracted={"choice": lenient.letter, "rule": lenient.rule, "strict_choice": strict.letter},
            scores={"accuracy": float(lenient.letter == problem.target),
                    "strict_accuracy": float(strict.letter == problem.target)},
        )

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        kept, rejected = self.counted(records)
        metrics: dict[str, float] = {}
        if kept:
            metrics["accuracy"] = percent(sum(r.scores["accuracy"] for r in kept), len(kept))
            metrics["strict_accuracy"] = percent(sum(r.scores.get("strict_accuracy", 0.0) for r in kept), len(kept))
        metrics["rejected"] = float(rejected)
        return metrics


__all__ = ["PCAEvalDomestic", "prompt_text"]
