"""Image-question datasets (domains MM and EV): the parts they share.

A dataset lists its problems (text with `<image N>` placeholders, image files, target) and scores a
reply; this base builds the chat requests one problem at a time, as the engine pulls them, so only
the images of the samples in flight are in memory.

A sample whose request cannot be built (image missing or corrupt, a placeholder without an image)
is yielded as a WorkItem with no bodies and `meta.error` set: the engine sends nothing for it, and
`score(item, [])` turns it into a failed SampleRecord carrying that reason. The run goes on.

Prompt building and the multiple-choice letter follow FlagEvalMM (VqaBaseDataset.build_prompt,
PromptTemplate, evaluator/pre_process.py), whose rules MM and EV tasks share.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.images import (
    ImageError,
    ImageSettings,
    check_placeholders,
    content_parts,
    image_data_url,
)
from flageval.engine.redact import redact_data_urls
from flageval.engine.types import EndpointKind, Reply, WorkItem

# FlagEvalMM's http client default; it is always sent. A user's max_gen_toks replaces it.
DEFAULT_MAX_TOKENS = 32768

# base_evaluator.filter_rejected: answers that start like this are left out of the denominator.
REJECT_PREFIXES = ("Error code", "Can not answer because of", "Input data may contain inappropriate content")


def rejection(answer: str) -> str | None:
    """The reject prefix the answer starts with, if any."""
    return next((p for p in REJECT_PREFIXES if answer.startswith(p)), None)


def percent(right: float, n: int) -> float:
    # FlagEvalMM's exact expression: right / n * 100, then 2 decimals (100 * right / n can round differently).
    return round(right / n * 100, 2)


def flagevalmm_prompt(question: str, options: Sequence[str] = (), *, has_image: bool, pre_prompt: str = "",
                      post_prompt: str = "") -> str:
    """VqaBaseDataset.build_prompt + PromptTemplate.default_prompt_func.

    Options follow the question as "\\nA. …"; an image-carrying question without `<image 1>` gets it
    in front; then `f"{pre}{question}\\n{post}".strip()`.
    """
    for number, option in enumerate(options):
        question += "\n" + chr(ord("A") + number) + ". " + option
    if has_image and "<image 1>" not in question:
        question = "<image 1> " + question
    return f"{pre_prompt}{question}\n{post_prompt}".strip()


# ---- the multiple-choice letter (evaluator/pre_process.py: strip_answer, process_multiple_choice) -----

# Applied in this order. "[INST]" and "[/INST]" are character classes there, not literals: every
# uppercase I, N, S, T and every "/" goes, which is also why "<Img>" and "</Img>" never match after them.
_STRIP_PATTERNS = [re.compile(p) for p in ("The", "If", "[INST]", "[/INST]", "<Img>", "</Img>")]
_LEADING_LETTER = re.compile(r"^([A-Z])\.")
_CHOICE_KEYWORDS = ("boxed", "Answer:", "Answer is", "answer is", "option is", "Correct option", "correct option",
                    "Answer", "answer", "故选", "选择", "正确选项为", "答案选", "答案为", "答案是", "因此", "答案")
_NOT_A_LETTER = re.compile(
    r"[-`\\【】\*\$、,，。.；;:：？\?！!\s\n\u4e00-\u9fff0-9①②③④⑤⑥⑦\[\]\<>a-z=\'\"\(\)\{\}]+")
_UPPER = re.compile(r"[A-Z]")


def choice_letters(answer: str) -> str:
    """process_multiple_choice: every capital left after cutting at the first keyword found.

    Capitalised words leak into the result ("After analysis, option C is right" gives "AC")."""
    for pattern in _STRIP_PATTERNS:
        answer = pattern.sub("", answer)
    answer = answer.strip()
    leading = _LEADING_LETTER.match(answer)
    if leading:
        return leading.group(1)
    for keyword in _CHOICE_KEYWORDS:
        if keyword in answer:
            answer = answer.split(keyword)[-1]
            break
    answer = _NOT_A_LETTER.sub("", answer)
    answer = answer.split("\n")[-1]  # no newline survives the line above; kept for fidelity
    return "".join(_UPPER.findall(answer))


def choice_answer(answer: str) -> str:
    """evaluate_multiple_choice's pick: a 1-character reply upper-cased, else the first letter found."""
    letters = answer.upper() if len(answer) == 1 else choice_letters(answer)
    return letters[:1]


def choice_correct(target: str, answer: str) -> bool:
    return target.upper() == choice_answer(answer)


# ---- problems and the dataset base --------------------------------------------------------------


@dataclass(frozen=True)
class VisualProblem:
    """One sample: `text` is the whole user message, `<image N>` where images[N-1] goes."""

    id: str
    text: str
    images: tuple[Path, ...]
    target: Any
    group: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # what judging needs (question type, choices, mask…)


@dataclass
class VisualMeta:
    """WorkItem.meta of image datasets. `error` set: the request could not be built, nothing is sent."""

    problem: VisualProblem
    error: str | None = None


@dataclass
class AnswerScore:
    """A scored reply. scores: metric → value; 'accuracy' first (it is the headline). No scores and a
    `rejected` reason: the reply is left out of the denominator, as FlagEvalMM's filter_rejected does."""

    extracted: Any
    scores: dict[str, float]
    rejected: str | None = None


class VisualDataset:
    """Base of the image-question datasets. Subclasses set name, domain, folder and implement
    `load` and `score_answer`; everything else (requests, records, FlagEvalMM's accuracy) is here."""

    name: str = ""
    domain: str = "MM"
    folder: str = ""  # under the data directory
    by_group: bool = False  # aggregate also reports accuracy per problem group (e.g. ERQA's question_type)

    def __init__(self, data_dir: Path, limit: int | None = None, *, mode: str | None = None,
                 kind: EndpointKind = "chat", images: ImageSettings | None = None,
                 max_tokens: int | None = DEFAULT_MAX_TOKENS):
        if kind != "chat":
            raise DatasetError(f"{self.name} needs a chat endpoint (…/v1/chat/completions): images travel as chat "
                               "content parts")
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / self.folder
        try:
            self.image_settings = images if images is not None else ImageSettings.from_env()
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        self.max_tokens = max_tokens
        problems = self.load(mode)
        if not problems:
            raise DatasetError(f"{self.name}: no problems found under {self.root}")
        self.problems: list[VisualProblem] = problems[:limit] if limit else problems

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        """Whether the dataset's files are there (default suites run only those)."""
        return (Path(data_dir) / cls.folder).is_dir()

    # -- what a dataset provides ------------------------------------------------------------------

    def load(self, mode: str | None) -> list[VisualProblem]:
        raise NotImplementedError

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        raise NotImplementedError

    def missing(self, path: Path, what: str) -> DatasetError:
        """The error for absent files: names the dataset and the expected location."""
        return DatasetError(f"{self.name}: {what} not found: expected {path} (data directory {self.data_dir}; "
                            "set FLAGEVAL_DATA_DIR or --data-dir)")

    # -- requests ---------------------------------------------------------------------------------

    def total(self) -> int:
        return len(self.problems)

    def sample_id(self, problem: VisualProblem) -> str:
        return f"{self.name}/{problem.id}"

    def image_label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def messages(self, problem: VisualProblem) -> list[dict[str, Any]]:
        """The chat messages, images encoded now. Raises ImageError."""
        check_placeholders(problem.text, len(problem.images))
        urls = [image_data_url(path, self.image_settings) for path in problem.images]
        return [{"role": "user", "content": content_parts(problem.text, urls)}]

    def build(self, index: int, problem: VisualProblem) -> WorkItem:
        """The work item with its request. Raises ImageError when it cannot be built."""
        body: dict[str, Any] = {"messages": self.messages(problem)}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return WorkItem(id=self.sample_id(problem), index=index, bodies=[body], meta=VisualMeta(problem))

    def items(self, kind: EndpointKind = "chat") -> Iterator[WorkItem]:
        """One built item at a time; the images of a problem are read when its item is pulled."""
        for index, problem in enumerate(self.problems):
            try:
                item = self.build(index, problem)
            except ImageError as exc:
                item = WorkItem(id=self.sample_id(problem), index=index, bodies=[],
                                meta=VisualMeta(problem, error=str(exc)))
            yield item

    def prompt_record(self, item: WorkItem) -> Any:
        """What a record shows as its prompt: the messages with each picture replaced by its file name."""
        problem: VisualProblem = item.meta.problem
        labels = [self.image_label(p) for p in problem.images]
        if item.bodies:
            return redact_data_urls(item.bodies[0]["messages"], labels)
        try:
            parts = content_parts(problem.text, [f"[image: {label}]" for label in labels])
        except ImageError:
            parts = [{"type": "text", "text": problem.text}]
        return [{"role": "user", "content": parts}]

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, item: WorkItem, replies: list[Reply]) -> SampleRecord:
        meta: VisualMeta = item.meta
        problem = meta.problem
        common = {"id": item.id, "index": item.index, "prompt": self.prompt_record(item), "target": problem.target,
                  "group": problem.group}
        if meta.error is not None:
            return SampleRecord(**common, error=meta.error)
        answer = replies[0].text if replies else ""
        try:
            scored = self.score_answer(problem, answer)
        except ImageError as exc:  # a reference image (e.g. a mask) is unusable: this sample fails
            return SampleRecord(**common, response=answer, error=str(exc))
        extracted = scored.extracted
        if scored.rejected is not None:
            extracted = {"rejected": scored.rejected}
        return SampleRecord(**common, response=answer, extracted=extracted, scores=scored.scores)

    @staticmethod
    def counted(records: Iterable[SampleRecord]) -> tuple[list[SampleRecord], int]:
        """(records in the denominator, rejected: failed samples and rejected replies)."""
        kept, rejected = [], 0
        for record in records:
            if record.error is None and "accuracy" in record.scores:
                kept.append(record)
            else:
                rejected += 1
        return kept, rejected

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        """FlagEvalMM's accuracy over the kept records; `rejected` counts the others. With by_group,
        also `accuracy/<group>` for each problem's group."""
        kept, rejected = self.counted(records)
        metrics: dict[str, float] = {}
        if kept:
            metrics["accuracy"] = percent(sum(r.scores["accuracy"] for r in kept), len(kept))
            if self.by_group:
                metrics.update(self.group_accuracies(kept))
        metrics["rejected"] = float(rejected)
        return metrics

    @staticmethod
    def group_accuracies(kept: Sequence[SampleRecord]) -> dict[str, float]:
        by_group: dict[str, list[float]] = defaultdict(list)
        for record in kept:
            if record.group is not None:
                by_group[record.group].append(record.scores["accuracy"])
        return {f"accuracy/{group}": percent(sum(v), len(v)) for group, v in sorted(by_group.items())}


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "REJECT_PREFIXES",
    "AnswerScore",
    "VisualDataset",
    "VisualMeta",
    "VisualProblem",
    "choice_answer",
    "choice_correct",
    "choice_letters",
    "flagevalmm_prompt",
    "percent",
    "rejection",
]
