"""Statuses, per-sample records, progress and per-dataset results."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


class Status(str, Enum):
    """FlagEval task statuses."""

    PENDING = "P"
    RUNNING = "R"
    SUCCESS = "S"
    FAILURE = "F"
    CANCELLED = "C"
    OUT_OF_RETRIES = "OOR"

    @property
    def finished(self) -> bool:
        return self in (Status.SUCCESS, Status.FAILURE, Status.OUT_OF_RETRIES)


def finished_ratio(statuses: Iterable[Status]) -> str:
    """'finished/all', e.g. 2/5: how FlagEval shows datasets done."""
    statuses = list(statuses)
    return f"{sum(s.finished for s in statuses)}/{len(statuses)}"


def overall_status(statuses: list[Status]) -> Status:
    """One service's status from its datasets': F or OOR once all finished and something failed, S when
    all succeeded; C when stopped; R once anything started; else P."""
    if statuses and all(s.finished for s in statuses):
        if Status.FAILURE in statuses:
            return Status.FAILURE
        return Status.OUT_OF_RETRIES if Status.OUT_OF_RETRIES in statuses else Status.SUCCESS
    if Status.CANCELLED in statuses:
        return Status.CANCELLED
    if Status.RUNNING in statuses or any(s.finished for s in statuses):
        return Status.RUNNING
    return Status.PENDING


class SampleRecord(BaseModel):
    """One finished sample: what was sent, what came back, how it scored. Written to samples.jsonl."""

    id: str = Field(description="Stable sample id within the dataset, e.g. 'gsm8k/17' or 'mmlu/anatomy/3'.")
    index: int = Field(description="Position in the dataset's order.")
    prompt: Any = Field(default=None, description="The prompt(s) or messages sent.")
    response: Any = Field(default=None, description="Answer text(s) scored (reasoning removed).")
    extracted: Any = Field(default=None, description="What the extraction filters took from the response.")
    target: Any = Field(default=None, description="The reference answer.")
    scores: dict[str, float] = Field(default_factory=dict, description="Metric name → 0/1 (or a value) for this sample.")
    values: dict[str, Any] | None = Field(
        default=None, description="Per-sample metric values that are not one number (lm-eval tasks: lists, pairs), by 'metric,filter'.")
    error: str | None = Field(default=None, description="Why the sample failed (no scores then).")
    group: str | None = Field(default=None, description="Sub-task (e.g. MMLU subject) for aggregation.")

    @property
    def failed(self) -> bool:
        return self.error is not None


class Progress(BaseModel):
    """A progress event: the bar shows it locally, the operator folds it into status."""

    dataset: str
    done: int = 0
    total: int = 0
    failed: int = 0
    rate: float = Field(default=0.0, description="Samples per second over the recent window.")

    @property
    def text(self) -> str:
        return f"{self.done}/{self.total}"


class DatasetResult(BaseModel):
    """The outcome of one (service, dataset) run. Accuracies are percentages (0–100)."""

    dataset: str
    status: Status
    accuracy: float | None = Field(default=None, description="Headline accuracy in percent.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Every reported metric, in percent.")
    n_samples: int = 0
    n_done: int = Field(default=0, description="Samples finished: scored, or failed after every retry.")
    n_failed: int = 0
    progress: str = Field(default="", description="n_done/n_samples, for people to read.")
    message: str = ""


def sample_verdicts(records: Iterable[SampleRecord], total: int) -> str:
    """One character per sample in dataset order — '1' right, '0' wrong, '-' failed or unscored — by the
    score the headline accuracy averages (a record's first). Enough to pair two runs sample by sample."""
    out = ["-"] * total
    for record in records:
        if record.error is None and record.scores and 0 <= record.index < total:
            out[record.index] = "1" if next(iter(record.scores.values())) >= 0.5 else "0"
    return "".join(out)


def pack_verdicts(verdicts: str) -> str:
    """Compact form for an API object: the length, then a bit per sample for right and one for scored,
    zlib-compressed, base64-encoded — about 2.4 KB for MMLU's 14k samples."""
    right = _bits(c == "1" for c in verdicts)
    scored = _bits(c != "-" for c in verdicts)
    return base64.b64encode(zlib.compress(len(verdicts).to_bytes(4, "big") + right + scored, 9)).decode("ascii")


def unpack_verdicts(packed: str) -> str:
    """Inverse of pack_verdicts. Raises ValueError on anything else."""
    try:
        raw = zlib.decompress(base64.b64decode(packed, validate=True))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not packed sample verdicts: {exc}") from None
    n = int.from_bytes(raw[:4], "big")
    size = (n + 7) // 8
    if len(raw) != 4 + 2 * size:
        raise ValueError("not packed sample verdicts: wrong length")
    right, scored = raw[4:4 + size], raw[4 + size:]
    bit = lambda data, i: data[i >> 3] >> (7 - (i & 7)) & 1
    return "".join(("1" if bit(right, i) else "0") if bit(scored, i) else "-" for i in range(n))


def _bits(flags: Iterable[bool]) -> bytes:
    out = bytearray()
    for i, flag in enumerate(flags):
        if i % 8 == 0:
            out.append(0)
        if flag:
            out[-1] |= 0x80 >> (i % 8)
    return bytes(out)
