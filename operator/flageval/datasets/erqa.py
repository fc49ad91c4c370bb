"""ERQA (Gemini Robotics' Embodied Reasoning QA) in its own format: TFRecord files of tf.train.Examples.

Files: `erqa/*.tfrecord` under the data directory (upstream ships `data/erqa.tfrecord`), read in name
order; a problem's id is its position over them. Features per example: `question` (bytes), `answer`
(bytes, a letter), `image/encoded` (one or more encoded pictures), `question_type` (bytes list: the
sub-task), `visual_indices` (int64 list: where in the question each picture goes).

Request, as FlagEvalMM's erqa task builds it (tasks/erqa/process.py, tasks/erqa/erqa.py):
  the question without " Please answer directly with only the letter of the correct option and nothing
  else."; pictures placed by visual_indices — all 0 (or none): every picture first; otherwise sorted by
  index, the question cut at each index with the picture between; then "\\n" + the task's post_prompt;
  each picture a JPEG-95 data URL in its place (FlagEvalMM's http client).
Score: FlagEvalMM's BaseEvaluator multiple-choice letter (mm.choice_answer) equal to the answer;
accuracy also per question_type (`accuracy/<type>`); rejected replies and failed samples are counted
in `rejected`, out of the denominator.

Pictures are read from the file when their sample is pulled: the whole file is never in memory. A
truncated or damaged file fails the dataset (naming the record); a picture that does not decode fails
its sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flageval.datasets.base import DatasetError
from flageval.datasets.images import (
    DATA_URL_PREFIX,
    ImageError,
    check_placeholders,
    content_parts,
    encode_image,
)
from flageval.datasets.mm import (
    AnswerScore,
    VisualDataset,
    VisualProblem,
    choice_answer,
    flagevalmm_prompt,
    rejection,
)
from flageval.datasets.tfrecord import ProtobufError, parse_example, record_at, records

POST_PROMPT = ("Answer the multiple-choice question above. Think through the problem step by step before providing "
               "your final answer. Your final response should end with a line in the following format: Answer: "
               "$LETTER (without quotes), where $LETTER corresponds to the correct option.")
DIRECT_ANSWER = " Please answer directly with only the letter of the correct option and nothing else."


def _text(values: list, name: str, where: str) -> str:
    if len(values) != 1 or not isinstance(values[0], bytes):
        raise DatasetError(f"{where}: feature '{name}' should hold one string, holds {len(values)} value(s)")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: feature '{name}' is not UTF-8 text") from None


def interleave(question: str, n_images: int, visual_indices: list[int]) -> str:
    """The question with `<image N>` placeholders where visual_indices put the pictures (process.py)."""
    if not visual_indices or all(index == 0 for index in visual_indices):
        return "".join([f"<image {i + 1}>" for i in range(n_images)] + [question]).strip()
    pairs = sorted(zip(range(n_images), visual_indices, strict=False), key=lambda pair: pair[1])
    contents, last = [], 0
    for image, index in pairs:
        if index > last:
            contents += [question[last:index], f"<image {image + 1}>"]
            last = index
        else:
            contents.append(f"<image {image + 1}>")
    if last < len(question):
        contents.append(question[last:])
    return "".join(contents).strip()


def prompt_text(question: str, n_images: int, visual_indices: list[int]) -> str:
    placed = interleave(question.replace(DIRECT_ANSWER, ""), n_images, visual_indices)
    return flagevalmm_prompt(placed, has_image=n_images > 0, post_prompt=POST_PROMPT)


class ERQA(VisualDataset):
    name = "erqa"
    domain = "EV"
    folder = "erqa"
    by_group = True

    @classmethod
    def present(cls, data_dir: Path) -> bool:
        return any((Path(data_dir) / cls.folder).glob("*.tfrecord"))

    def load(self, mode: str | None) -> list[VisualProblem]:
        if mode not in (None, "generative"):
            raise DatasetError(f"{self.name} has no mode '{mode}'")
        files = sorted(self.root.glob("*.tfrecord"))
        if not files:
            raise self.missing(self.root / "*.tfrecord", "TFRecord file")
        problems: list[VisualProblem] = []
        for path in files:
            for number, (offset, data) in enumerate(records(path)):
                problems.append(self.problem(len(problems), path, number, offset, data))
        return problems

    def problem(self, index: int, path: Path, number: int, offset: int, data: bytes) -> VisualProblem:
        where = f"{path}: record {number}"
        try:
            example = parse_example(data)
        except ProtobufError as exc:
            raise DatasetError(f"{where} is not a tf.train.Example ({exc})") from None
        missing = [k for k in ("question", "answer", "image/encoded") if k not in example]
        if missing:
            raise DatasetError(f"{where} lacks feature(s) {', '.join(missing)}")
        question = _text(example["question"], "question", where)
        answer = _text(example["answer"], "answer", where).strip()
        if len(answer) != 1 or not answer.isalpha():
            raise DatasetError(f"{where}: answer {answer!r} is not one letter")
        n_images = len(example["image/encoded"])
        indices = [int(i) for i in example.get("visual_indices", [])]
        types = [t.decode("utf-8", errors="replace") for t in example.get("question_type", []) if isinstance(t, bytes)]
        return VisualProblem(
            id=str(index), text=prompt_text(question, n_images, indices),
            # Labels for records and errors: the pictures live inside the record.
            images=tuple(path.parent / f"{path.name}#{number}" / f"image {i + 1}" for i in range(n_images)),
            target=answer.upper(), group=", ".join(types) or None,
            data={"file": path, "offset": offset},
        )

    def messages(self, problem: VisualProblem) -> list[dict[str, Any]]:
        check_placeholders(problem.text, len(problem.images))
        try:
            pictures = parse_example(record_at(problem.data["file"], problem.data["offset"])).get("image/encoded", [])
        except (DatasetError, ProtobufError, OSError) as exc:  # the file changed since it was loaded
            raise ImageError(f"pictures of problem {problem.id} cannot be read again: {exc}") from None
        if len(pictures) != len(problem.images):
            raise ImageError(f"{problem.data['file']}: the record of problem {problem.id} changed since it was loaded")
        urls = [DATA_URL_PREFIX + encode_image(label, self.image_settings, data=picture)
                for label, picture in zip(problem.images, pictures, strict=True)]
        return [{"role": "user", "content": content_parts(problem.text, urls)}]

    def score_answer(self, problem: VisualProblem, answer: str) -> AnswerScore:
        answer = answer.split("</think>", 1)[1] if "</think>" in answer else answer
        prefix = rejection(answer)
        if prefix is not None:
            return AnswerScore(extracted=None, scores={}, rejected=prefix)
        letter = choice_answer(answer)
        return AnswerScore(extracted=letter, scores={"accuracy": float(letter == problem.target)})


__all__ = ["DIRECT_ANSWER", "ERQA", "POST_PROMPT", "interleave", "prompt_text"]
