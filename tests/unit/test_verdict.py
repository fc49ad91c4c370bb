"""Diffs, the release rule and the paired test, checked against independent computations."""

import random

import pytest
from flageval.api import DatasetResult, SampleRecord, Status
from flageval.verdict import mcnemar_exact, paired_test, release_verdict
from scipy.stats import binomtest


def result(name, acc, status=Status.SUCCESS):
    return DatasetResult(dataset=name, status=status, accuracy=acc)


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (3, 10), (10, 3), (0, 7), (50, 50), (120, 90), (400, 351)])
def test_mcnemar_equals_exact_binomial_test(only_a, only_b):
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(min(only_a, only_b), n, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_diff_and_release_within_tolerance():
    verdicts, release = release_verdict([result("gsm8k", 80.2), result("mmlu", 70.0)], [result("gsm8k", 80.0), result("mmlu", 70.4)])
    assert [(v.dataset, v.base_accuracy, v.diff) for v in verdicts] == [("gsm8k", 80.0, 0.2), ("mmlu", 70.4, -0.4)]
    assert release is True


def test_release_refused_outside_tolerance_or_unfinished():
    _, release = release_verdict([result("gsm8k", 80.5)], [result("gsm8k", 80.0)])
    assert release is False  # |diff| must be strictly below 0.5
    _, release = release_verdict([result("gsm8k", 80.0, Status.OUT_OF_RETRIES)], [result("gsm8k", 80.0)])
    assert release is False
    _, release = release_verdict([result("gsm8k", 80.4)], [result("gsm8k", 80.0)], tolerance=0.3)
    assert release is False


def test_dataset_missing_from_baseline_has_no_diff_and_blocks_release():
    verdicts, release = release_verdict([result("gsm8k", 80.0), result("mmlu", 60.0)], [result("gsm8k", 80.0)])
    assert verdicts[1].diff is None and verdicts[1].base_accuracy is None
    assert release is False


def test_no_baseline_means_the_run_is_its_own_reference():
    verdicts, release = release_verdict([result("gsm8k", 80.0)], None)
    assert verdicts[0].diff == 0.0 and release is True


def test_paired_test_counts_discordant_pairs_and_brackets_the_diff():
    rng = random.Random(7)
    a, b = [], []
    for i in range(2000):
        right_a = rng.random() < 0.7
        right_b = right_a if rng.random() < 0.9 else not right_a
        a.append(SampleRecord(id=f"s{i}", index=i, scores={"acc": float(right_a)}))
        b.append(SampleRecord(id=f"s{i}", index=i, scores={"acc": float(right_b)}))
    b.append(SampleRecord(id="only-in-b", index=9999, scores={"acc": 1.0}))
    b[0] = SampleRecord(id="s0", index=0, error="timeout")  # failed samples are not paired
    test = paired_test(a, b, "acc")
    pairs = [(x.scores["acc"], y.scores["acc"]) for x, y in zip(a[1:], b[1:2000])]
    assert test.n == 1999
    assert test.only_a == sum(1 for x, y in pairs if x == 1 and y == 0)
    assert test.only_b == sum(1 for x, y in pairs if x == 0 and y == 1)
    observed = (test.only_b - test.only_a) * 100 / test.n
    assert test.ci_low < observed < test.ci_high
    assert 0 < test.ci_high - test.ci_low < 5


def test_paired_test_without_common_samples_is_none():
    assert paired_test([SampleRecord(id="a", index=0, scores={"acc": 1})], [SampleRecord(id="b", index=0, scores={"acc": 1})], "acc") is None


def mc2_like(rng, n, shift):
    """truthfulqa_mc2-shaped scores: the probability mass on the true answers, a value in [0, 1]."""
    a = [rng.random() for _ in range(n)]
    b = [min(1.0, max(0.0, x + shift + rng.gauss(0, 0.05))) for x in a]
    return ([SampleRecord(id=f"s{i}", index=i, scores={"acc": x}) for i, x in enumerate(a)],
            [SampleRecord(id=f"s{i}", index=i, scores={"acc": y}) for i, y in enumerate(b)])


def test_scores_on_a_scale_get_the_paired_bootstrap_only():
    import numpy as np

    rng = random.Random(3)
    a, b = mc2_like(rng, 817, 0.0)
    test = paired_test(a, b, "acc")
    assert test.scale and test.p_value is None  # no McNemar on values that are not right/wrong
    diffs = np.array([y.scores["acc"] - x.scores["acc"] for x, y in zip(a, b)]) * 100
    assert test.only_a == int((diffs < 0).sum()) and test.only_b == int((diffs > 0).sum())
    # the bootstrap interval of the mean paired difference ≈ mean ± 1.96 standard errors
    half = 1.96 * diffs.std(ddof=1) / len(diffs) ** 0.5
    assert test.ci_low == pytest.approx(diffs.mean() - half, abs=0.1)
    assert test.ci_high == pytest.approx(diffs.mean() + half, abs=0.1)
    assert test.ci_low < 0 < test.ci_high  # no shift: zero inside
    assert paired_test(a, b, "acc") == test  # seeded

    a, b = mc2_like(rng, 817, -0.03)  # three points lower on the scale
    shifted = paired_test(a, b, "acc")
    assert shifted.ci_high < 0 and shifted.ci_low > -4.5


def test_a_scale_dataset_sends_no_verdicts_to_pair_in_its_report():
    from flageval.api.evaluation import TaskOutcome

    rng = random.Random(4)
    done = DatasetResult(dataset="truthfulqa_mc2", status=Status.SUCCESS, accuracy=50.0, n_samples=817)
    scale, _ = mc2_like(rng, 817, 0.0)
    assert TaskOutcome.of(done, scale).sample_verdicts is None
    verdicts = [SampleRecord(id=f"s{i}", index=i, scores={"acc": float(i % 2)}) for i in range(817)]
    assert TaskOutcome.of(done, verdicts).sample_verdicts is not None
