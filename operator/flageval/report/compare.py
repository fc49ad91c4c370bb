"""Sample-level disagreements between a baseline run and another run of the same dataset.

Two runs are paired by sample id over the samples both scored; a sample is right by the score the
headline accuracy averages (SampleRecord.right, the rule the operator's packed verdicts use too), and the
counts, the McNemar p-value and the bootstrap interval come from verdict.paired_from_pairs, so `flageval
compare`, the report, the REST API and the Evaluation's status say the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flageval.api import DatasetResult, SampleRecord
from flageval.api.results import is_verdict
from flageval.results import RunPaths, read_result, read_samples, read_service
from flageval.verdict import paired_from_pairs, paired_on_scale

RIGHT_TO_WRONG = "right→wrong"
WRONG_TO_RIGHT = "wrong→right"


@dataclass
class RunDir:
    """One service's results directory (`flageval eval --output DIR`, a runner's --output): its datasets."""

    dir: Path
    eval_model: str
    model: str = ""
    chip: str = ""
    baseline_key: str = ""
    results: dict[str, DatasetResult] = field(default_factory=dict)

    def samples(self, dataset: str) -> list[SampleRecord]:
        return list(read_samples(RunPaths(self.dir / dataset)))

    @property
    def label(self) -> str:
        return f"{self.eval_model} ({self.chip})" if self.chip else self.eval_model


def load_run(path: Path) -> RunDir:
    """A results directory; ValueError when it holds no dataset result."""
    path = Path(path)
    results = {}
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        result = read_result(RunPaths(child)) if child.is_dir() else None
        if result is not None:
            results[child.name] = result
    if not results:
        raise ValueError(f"{path} holds no results (expected {path}/<dataset>/result.json)")
    service = read_service(path) or {}
    model = service.get("model") or _model_of_run(path, results)
    return RunDir(dir=path, eval_model=service.get("eval_model") or path.name, model=model,
                  chip=service.get("chip", ""), baseline_key=service.get("baseline_key") or model, results=results)


def _model_of_run(path: Path, results: dict[str, DatasetResult]) -> str:
    """Directories written before service.json: the model from a run's identity file."""
    for dataset in results:
        try:
            return json.loads(RunPaths(path / dataset).run.read_text(encoding="utf-8")).get("model", "")
        except (OSError, ValueError):
            continue
    return ""


@dataclass
class FlippedSample:
    """A sample one run got right and the other wrong, with what each said."""

    id: str
    index: int
    direction: str  # RIGHT_TO_WRONG: right on the baseline, wrong on the other run
    prompt: Any
    target: Any
    baseline_response: Any
    response: Any
    baseline_extracted: Any
    extracted: Any


@dataclass
class Disagreement:
    """The 2×2 table of paired samples (baseline → run), its exact McNemar p-value, the paired-bootstrap 95 %
    interval of the accuracy difference, and how often the two answered word for word alike."""

    dataset: str
    baseline: str
    run: str
    paired: int
    both_right: int
    right_to_wrong: int
    wrong_to_right: int
    both_wrong: int
    p_value: float | None
    diff_ci: tuple[float, float] | None
    identical_responses: int  # paired samples whose responses are equal as text
    same_verdict_different_text: int  # paired samples scored the same whose responses differ
    unpaired: int  # samples scored in one run only (failed or missing in the other)
    flipped: list[FlippedSample] = field(default_factory=list)
    # Scores on a scale: no 2×2 table and no McNemar; right_to_wrong / wrong_to_right count the samples the
    # baseline / this run scored higher, and diff_ci is the paired bootstrap of the mean difference.
    scale: bool = False

    @property
    def agreement_rate(self) -> float | None:
        """Share of paired samples answered identically, percent. Deterministic decoding on two chips should
        mostly agree word for word; a low rate is a numeric-drift signal even when accuracy agrees."""
        return round(100.0 * self.identical_responses / self.paired, 2) if self.paired else None

    def as_dict(self, *, samples: bool = True) -> dict[str, Any]:
        out = asdict(self)
        out["diff_ci"] = list(self.diff_ci) if self.diff_ci else None
        out["agreement_rate"] = self.agreement_rate
        if not samples:
            out.pop("flipped")
        return out


def disagreement(dataset: str, baseline: Iterable[SampleRecord], other: Iterable[SampleRecord], *,
                 baseline_name: str = "baseline", run_name: str = "run") -> Disagreement:
    """Pair the two runs' records of one dataset by sample id. Scores on a scale (truthfulqa_mc2) have no
    right and wrong: then only the paired bootstrap is given, with how often each run scored higher."""
    base = {r.id: r for r in baseline}
    other = list(other)
    if _on_scale(base.values()) or _on_scale(other):
        return _on_scale_disagreement(dataset, base, other, baseline_name, run_name)
    pairs: list[tuple[bool, bool]] = []
    flipped: list[FlippedSample] = []
    identical = same_verdict_different_text = scored_other = 0
    for record in sorted(other, key=lambda r: r.index):
        b = record.right
        scored_other += b is not None
        theirs = base.get(record.id)
        a = theirs.right if theirs is not None else None
        if a is None or b is None:
            continue
        pairs.append((a, b))
        same_text = _text(theirs.response) == _text(record.response)
        identical += same_text
        if a == b:
            same_verdict_different_text += not same_text
        else:
            flipped.append(FlippedSample(
                id=record.id, index=record.index, direction=RIGHT_TO_WRONG if a else WRONG_TO_RIGHT,
                prompt=record.prompt, target=record.target, baseline_response=theirs.response, response=record.response,
                baseline_extracted=theirs.extracted, extracted=record.extracted))
    scored_base = sum(1 for r in base.values() if r.right is not None)
    test = paired_from_pairs(pairs)
    return Disagreement(
        dataset=dataset, baseline=baseline_name, run=run_name, paired=len(pairs),
        both_right=test.both_right if test else 0, right_to_wrong=test.only_a if test else 0,
        wrong_to_right=test.only_b if test else 0, both_wrong=test.both_wrong if test else 0,
        p_value=test.p_value if test else None, diff_ci=(test.ci_low, test.ci_high) if test else None,
        identical_responses=identical, same_verdict_different_text=same_verdict_different_text,
        unpaired=scored_base + scored_other - 2 * len(pairs), flipped=flipped,
    )


def brief(value: Any, limit: int = 40) -> str:
    """A target or extraction in one short line: per-filter extractions ({'strict-match': '3', …}) as one
    value when they agree."""
    if isinstance(value, dict) and value:
        values = list(value.values())
        value = values[0] if all(v == values[0] for v in values) else ", ".join(f"{k}: {v}" for k, v in value.items())
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first(record: SampleRecord) -> float | None:
    return next(iter(record.scores.values())) if record.error is None and record.scores else None


def _on_scale(records: Iterable[SampleRecord]) -> bool:
    return any((v := _first(r)) is not None and not is_verdict(v) for r in records)


def _on_scale_disagreement(dataset: str, base: dict[str, SampleRecord], other: list[SampleRecord], baseline_name: str,
                           run_name: str) -> Disagreement:
    values, identical, scored_other = [], 0, 0
    for record in other:
        b = _first(record)
        scored_other += b is not None
        theirs = base.get(record.id)
        a = _first(theirs) if theirs is not None else None
        if a is None or b is None:
            continue
        values.append((a, b))
        identical += _text(theirs.response) == _text(record.response)
    scored_base = sum(1 for r in base.values() if _first(r) is not None)
    test = paired_on_scale(values)
    return Disagreement(
        dataset=dataset, baseline=baseline_name, run=run_name, paired=len(values), both_right=0,
        right_to_wrong=test.only_a if test else 0, wrong_to_right=test.only_b if test else 0, both_wrong=0,
        p_value=None, diff_ci=(test.ci_low, test.ci_high) if test else None, identical_responses=identical,
        same_verdict_different_text=0, unpaired=scored_base + scored_other - 2 * len(values), scale=True)


def _text(response: Any) -> str:
    """A response as text to compare: strings as they are, several answers (completions) as JSON."""
    return response if isinstance(response, str) else json.dumps(response, sort_keys=True, ensure_ascii=False)


def compare_runs(baseline: RunDir, other: RunDir, datasets: Sequence[str] | None = None) -> list[Disagreement]:
    """Every dataset both directories hold (or those named), in name order."""
    names = [d for d in sorted(other.results) if d in baseline.results and (datasets is None or d in datasets)]
    return [disagreement(d, baseline.samples(d), other.samples(d), baseline_name=baseline.label, run_name=other.label)
            for d in names]
