"""Sample-level disagreements of per-sample scores on a scale: the paired bootstrap, no 2×2 table."""

from flageval.api import SampleRecord


def test_scores_on_a_scale_get_no_two_by_two_table():
    from flageval.report.compare import disagreement
    from flageval.verdict import paired_on_scale

    base = [SampleRecord(id=f"t/{i}", index=i, response="a", scores={"acc": 0.2 + 0.01 * i}) for i in range(30)]
    other = [SampleRecord(id=f"t/{i}", index=i, response="a" if i % 2 else "b", scores={"acc": 0.25 + 0.01 * i - 0.1 * (i % 3 == 0)})
             for i in range(30)]
    d = disagreement("truthfulqa_mc2", base, other)
    expected = paired_on_scale([(a.scores["acc"], b.scores["acc"]) for a, b in zip(base, other)])
    assert d.scale and d.p_value is None and d.flipped == [] and d.both_right == d.both_wrong == 0
    assert (d.right_to_wrong, d.wrong_to_right) == (expected.only_a, expected.only_b) and d.diff_ci == (expected.ci_low, expected.ci_high)
    assert d.paired == 30 and d.identical_responses == 15
