"""The baseline rule, once: same evaluation first, then an explicitly named one, then the newest succeeded."""

from flageval.baseline import Candidate, choose_baseline


def svc(evaluation, eval_model, key="Qwen3-8B", *, succeeded=True, created=0.0):
    return Candidate(evaluation, eval_model, key, succeeded=succeeded, created=created)


ASCEND = svc("now", "q-ascend")
OLD = svc("old", "q-nvidia-origin", created=1.0)
NEW = svc("new", "q-nvidia-origin", created=2.0)


def test_a_baseline_is_its_own_reference():
    own = svc("now", "q-nvidia-origin")
    assert choose_baseline(own, [own], [NEW]) is own


def test_the_same_evaluation_comes_first_even_unfinished():
    mine = svc("now", "q-nvidia-origin", succeeded=False)
    assert choose_baseline(ASCEND, [mine, ASCEND], [OLD, NEW]) is mine


def test_only_a_baseline_of_the_same_key_counts():
    other_family = svc("now", "l-nvidia-origin", key="Llama-8B")
    assert choose_baseline(ASCEND, [other_family, ASCEND], [OLD, NEW]) is NEW
    assert choose_baseline(ASCEND, [ASCEND], [svc("x", "l-nvidia-origin", key="Llama-8B")]) is None


def test_a_named_evaluation_wins_over_newer_ones_and_nothing_replaces_it():
    assert choose_baseline(ASCEND, [ASCEND], [OLD, NEW], named="old") is OLD
    assert choose_baseline(ASCEND, [ASCEND], [OLD, NEW], named="missing") is None
    unfinished = svc("running", "q-nvidia-origin", succeeded=False, created=3.0)
    assert choose_baseline(ASCEND, [ASCEND], [unfinished, NEW], named="running") is unfinished


def test_otherwise_the_newest_succeeded_baseline():
    failed = svc("newest", "q-nvidia-origin", succeeded=False, created=9.0)
    not_marked = svc("newer", "q-h100", created=5.0)
    assert choose_baseline(ASCEND, [ASCEND], [OLD, failed, not_marked, NEW]) is NEW
    assert choose_baseline(ASCEND, [ASCEND], [failed]) is None


def test_comparing_a_set_falls_back_to_any_marked_service_then_the_first():
    first, second = svc("a", "q-ascend"), svc("b", "q-kunlun")
    other_family = svc("b", "l-nvidia-origin", key="Llama-8B")
    assert choose_baseline(first, [first, second, other_family], compare_all=True) is other_family
    assert choose_baseline(second, [first, second], compare_all=True) is first
    assert choose_baseline(first, [first, second], compare_all=True) is first


def test_comparing_a_set_compares_a_second_baseline_with_the_first():
    a, b = svc("a", "q-nvidia-origin"), svc("b", "q2-nvidia-origin")
    assert choose_baseline(b, [a, b], compare_all=True) is a
    assert choose_baseline(a, [a, b], compare_all=True) is a
