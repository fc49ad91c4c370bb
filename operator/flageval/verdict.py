"""Diffs to a baseline, the release rule, and a paired significance test on per-sample results.

Which baseline a run is compared with is decided in flageval.baseline."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import comb

import numpy as np

from flageval.api import DatasetResult, SampleRecord, Status
from flageval.api.results import is_verdict, unpack_verdicts

DEFAULT_TOLERANCE = 0.5  # points of accuracy, FlagEval's release rule


@dataclass(frozen=True)
class PairedTest:
    """How likely the two runs differ beyond chance, on the samples both answered."""

    n: int  # paired samples
    only_a: int  # right in run A, wrong in run B (on a scale: A scored higher)
    only_b: int  # wrong in run A, right in run B (on a scale: B scored higher)
    p_value: float | None  # exact two-sided McNemar; None for scores on a scale (no right/wrong to pair)
    ci_low: float  # paired-bootstrap 95 % CI of accuracy(B) − accuracy(A), in points
    ci_high: float
    both_right: int = 0
    both_wrong: int = 0
    scale: bool = False  # per-sample scores on a scale (truthfulqa_mc2): the paired bootstrap only


@dataclass(frozen=True)
class DatasetComparison:
    dataset: str
    status: Status
    accuracy: float | None
    base_accuracy: float | None
    diff: float | None
    within_tolerance: bool
    paired: PairedTest | None = None


@lru_cache(maxsize=4096)
def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def paired_test(
    records_a: Iterable[SampleRecord],
    records_b: Iterable[SampleRecord],
    metric: str,
    *,
    resamples: int = 2000,
    seed: int = 1234,
) -> PairedTest | None:
    """McNemar and bootstrap on samples both runs scored; None when they share none. Scores on a scale
    (not all 0 or 1: truthfulqa_mc2) get the paired bootstrap of the mean difference only."""
    scored_a = {r.id: r.scores[metric] for r in records_a if r.error is None and metric in r.scores}
    values = [(scored_a[r.id], r.scores[metric])
              for r in records_b if r.error is None and metric in r.scores and r.id in scored_a]
    if not all(is_verdict(a) and is_verdict(b) for a, b in values):
        return paired_on_scale(values, resamples=resamples, seed=seed)
    pairs = [(a >= 0.5, b >= 0.5) for a, b in values]
    return paired_from_pairs(pairs, resamples=resamples, seed=seed)


BOOTSTRAP_CHUNK = 250  # resamples drawn at a time: n × chunk weights in memory, not n × resamples


def paired_on_scale(values: Sequence[tuple[float, float]], *, resamples: int = 2000,
                    seed: int = 1234) -> PairedTest | None:
    """Paired bootstrap of mean(B) − mean(A), in points, for per-sample scores on a scale; None without
    pairs. McNemar needs right/wrong pairs and is not computed."""
    if not values:
        return None
    n = len(values)
    a = np.array([x for x, _ in values], dtype=float)
    b = np.array([y for _, y in values], dtype=float)
    diff = b - a
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(BOOTSTRAP_CHUNK, resamples - start))
        means.append(counts @ diff / n)
    low, high = np.percentile(np.concatenate(means) * 100.0, [2.5, 97.5])
    return PairedTest(n, int((a > b).sum()), int((b > a).sum()), None, round(float(low), 2), round(float(high), 2),
                      scale=True)


@lru_cache(maxsize=4096)
def paired_from_verdicts(packed_a: str, packed_b: str, *, resamples: int = 2000, seed: int = 1234) -> PairedTest | None:
    """The same test from two runs' packed sample verdicts (api.results.pack_verdicts) over the same
    samples; None when they differ in length, cannot be read, or share no scored sample."""
    try:
        a, b = unpack_verdicts(packed_a), unpack_verdicts(packed_b)
    except ValueError:
        return None
    if len(a) != len(b):
        return None
    pairs = [(x == "1", y == "1") for x, y in zip(a, b) if x != "-" and y != "-"]
    return paired_from_pairs(pairs, resamples=resamples, seed=seed)


def paired_from_pairs(pairs: Sequence[tuple[bool, bool]], *, resamples: int = 2000, seed: int = 1234) -> PairedTest | None:
    """The test on (right in A, right in B) per paired sample; None without pairs. Every way of pairing
    two runs' right/wrong verdicts ends here (scores on a scale: paired_on_scale)."""
    return _paired(pairs, resamples, seed)


def _paired(pairs: Sequence[tuple[bool, bool]], resamples: int, seed: int) -> PairedTest | None:
    if not pairs:
        return None
    n = len(pairs)
    only_a = sum(1 for a, b in pairs if a and not b)
    only_b = sum(1 for a, b in pairs if b and not a)
    both_right = sum(1 for a, b in pairs if a and b)
    # A pair's diff is −1, 0 or +1: resampling pairs is a multinomial draw over the three.
    counts = np.random.default_rng(seed).multinomial(n, [only_a / n, only_b / n, (n - only_a - only_b) / n], size=resamples)
    diffs = (counts[:, 1] - counts[:, 0]) * 100.0 / n
    low, high = np.percentile(diffs, [2.5, 97.5])
    return PairedTest(n, only_a, only_b, mcnemar_exact(only_a, only_b), round(float(low), 2), round(float(high), 2),
                      both_right, n - only_a - only_b - both_right)


def release_verdict(
    results: Sequence[DatasetResult],
    baseline: Sequence[DatasetResult] | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    paired: dict[str, PairedTest | None] | None = None,
) -> tuple[list[DatasetComparison], bool]:
    """Per dataset: diff = accuracy − baseline accuracy. Release: every dataset S and |diff| < tolerance.

    baseline None: the run is its own reference (a baseline run), so diff is 0 for a finished dataset, as
    FlagEval reports its reference run. A dataset the baseline lacks — every dataset, when no baseline
    was found ([]) — has no diff and blocks release.
    """
    base = {r.dataset: r for r in baseline} if baseline is not None else None
    comparisons = []
    for result in results:
        base_acc: float | None
        if base is None:
            base_acc = result.accuracy
        else:
            other = base.get(result.dataset)
            base_acc = other.accuracy if other is not None and other.status == Status.SUCCESS else None
        diff = None
        if result.accuracy is not None and base_acc is not None:
            diff = round(result.accuracy - base_acc, 2)
        ok = result.status == Status.SUCCESS and diff is not None and abs(diff) < tolerance
        comparisons.append(
            DatasetComparison(result.dataset, result.status, result.accuracy, base_acc, diff, ok, (paired or {}).get(result.dataset))
        )
    release = bool(comparisons) and all(v.within_tolerance for v in comparisons)
    return comparisons, release
