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


class CallStat(BaseModel):
    """One request a sample needed, as the engine saw it: how long the answer took, what it produced, and
    which attempts failed before it. Serving figures (ServingFigures) are summed from these."""

    latency: float | None = Field(default=None, description="Seconds of the attempt that answered; null when cached or unanswered.")
    output_tokens: int | None = Field(default=None, description="usage.completion_tokens of the answer; null when the service sent none.")
    finish_reason: str | None = Field(default=None, description="The choice's finish_reason ('stop', 'length', …).")
    cached: bool = Field(default=False, description="Answered from the response cache: nothing was sent.")
    failures: dict[str, int] = Field(default_factory=dict, description="Failed attempts by kind (http_503, timeout, connection_error, malformed…).")
    retries: dict[str, int] = Field(default_factory=dict, description="Attempts sent again, by the kind of failure before them.")


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
    calls: list[CallStat] | None = Field(default=None, description="The sample's requests as the engine saw them (serving figures).")

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def right(self) -> bool | None:
        """Right or wrong by the score the headline accuracy averages (a record's first); None when failed
        or unscored. What pairs two runs sample by sample."""
        if self.error is not None or not self.scores:
            return None
        return next(iter(self.scores.values())) >= 0.5


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


class ServingFigures(BaseModel):
    """How a service answered one dataset's requests (engine.serving.serving_figures computes them).

    Latency is the duration of the attempt that answered; answers from the response cache are counted
    in `cached` and left out of every other figure."""

    requests: int = Field(default=0, description="Requests answered by the service (not from the cache).")
    cached: int = Field(default=0, description="Requests answered from the response cache.")
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    usage_reported: int = Field(default=0, description="Answers that carried usage.completion_tokens.")
    output_tokens_per_request: float | None = Field(default=None, description="Mean completion tokens of the answers that reported usage.")
    output_tokens_per_second: float | None = Field(
        default=None, description="Completion tokens over the latency of the answers that reported usage: one request's decode speed.")
    truncated: int = Field(default=0, description="Answers cut by the length limit (finish_reason 'length').")
    truncated_percent: float | None = Field(default=None, description="truncated / requests, in percent.")
    errors: dict[str, int] = Field(default_factory=dict, description="Failed attempts by kind.")
    retries: dict[str, int] = Field(default_factory=dict, description="Attempts sent again, by the kind of failure before them.")
    note: str = Field(default="", description="What the figures cannot say (e.g. the service sent no usage).")


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
    serving: ServingFigures | None = Field(default=None, description="How the service answered: latency, tokens, truncation, errors.")


def is_verdict(score: float) -> bool:
    """A per-sample score that is right or wrong (0 or 1), not a value on a scale (truthfulqa_mc2's
    probability mass on the true answers): only verdicts pair as right/wrong, for McNemar."""
    return score in (0.0, 1.0)


def sample_verdicts(records: Iterable[SampleRecord], total: int) -> str:
    """One character per sample in dataset order — '1' right, '0' wrong, '-' failed or unscored — by the
    score the headline accuracy averages (a record's first). Enough to pair two runs sample by sample."""
    out = ["-"] * total
    for record in records:
        right = record.right
        if right is not None and 0 <= record.index < total:
            out[record.index] = "1" if right else "0"
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
