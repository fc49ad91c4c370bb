"""The extraction table for points (Where2Place): replies, the pixels read, and the scores the rules
give them, hand-checked on one 64×48 mask whose free space is columns 0–15 of rows 8–39."""

from __future__ import annotations

import pytest
from flageval.datasets.points import ACCEPT, mask_mean, parse_points
from support.ev_fixtures import w2p_mask

WIDTH, HEIGHT = 64, 48
MASK = w2p_mask(0) / 255.0
assert MASK[8:40, 0:16].all() and MASK.sum() == 16 * 32

POINTS = [
    # reply, RoboPoint's share (whole reply), share of the last line only, FlagEvalMM's verdict (≥ 0.5)
    ("Answer: [(0.125, 0.5)]", 1.0, 1.0, True),  # (8, 24)
    ("Answer: [(0.125, 0.5), (0.5, 0.5)]", 0.5, 0.5, True),  # (32, 24) is outside; 0.5 is enough
    ("Answer: [(0.125, 0.5), (0.5, 0.5), (0.9, 0.9)]", 1 / 3, 1 / 3, False),
    ("(10, 20)", 1.0, 1.0, True),  # integers are pixels
    ("(10, 0.5)", 0.0, 0.0, False),  # one float makes both fractions: x = 640
    ("(+10, +20)", 1.0, 1.0, True),
    ("(-1, 20)", 0.0, 0.0, False),  # outside the picture counts 0
    ("Answer: [(1.0, 1.0)]", 0.0, 0.0, False),  # (64, 48): just outside
    ("(0.999, 0.999)", 0.0, 0.0, False),  # (63, 47): inside the picture, outside the mask
    ("Answer: [(0.12, 0.5), (0.1, 0.7)]", 1.0, 1.0, True),  # (7, 24), (6, 33)
    ("(0.05, 0.3, 0.2, 0.6)", 1.0, 1.0, True),  # box of fractions: columns 3–11, rows 14–27
    ("(10, 4, 20, 12)", 24 / 80, 24 / 80, False),  # pixel box 10×8, 6×4 of it inside
    ("[(8, 24), (8, 24, 10, 26)]", 1.0, 1.0, True),  # a point and a 2×2 box
    ("(-5, 10, 5, 12)", 0.0, 0.0, False),  # numpy's mask[10:12, -5:5] is empty: no point at all
    ("(3, 10, 0.5, 12)", 0.0, 0.0, False),  # a box mixing pixels and fractions: unreadable
    ("(1, 2, 3)", 0.0, 0.0, False),  # three numbers: ignored
    ("Answer: [(0.125 , 0.5)]", 0.0, 0.0, False),  # a space before the comma: not a tuple
    ("I would put it on the left of the box.", 0.0, 0.0, False),  # no point
    ("Candidates (0.5, 0.5) and (0.125, 0.5)\nAnswer: [(0.125, 0.5)]", 2 / 3, 1.0, True),  # last line decides FlagEvalMM
    ("Answer: [(0.125, 0.5)]\nHope this helps.", 1.0, 0.0, False),  # nothing on the last line
]


@pytest.mark.parametrize(("reply", "share", "last_share", "right"), POINTS, ids=[repr(p[0])[:40] for p in POINTS])
def test_points_table(reply, share, last_share, right):
    whole = parse_points(reply, WIDTH, HEIGHT)
    last = parse_points(reply, WIDTH, HEIGHT, last_line=True)
    assert mask_mean(whole, MASK) == pytest.approx(share)
    assert mask_mean(last, MASK) == pytest.approx(last_share)
    assert (mask_mean(last, MASK) >= ACCEPT) is right


def test_what_a_record_shows_for_unreadable_replies():
    assert parse_points("no idea", WIDTH, HEIGHT).summary() == {"points": [], "boxes": [],
                                                               "problem": "no point found in the reply"}
    assert parse_points("(3, 10, 0.5, 12)", WIDTH, HEIGHT).summary()["problem"] == "box (3, 10, 0.5, 12) mixes pixels and fractions"
    assert parse_points("(0.125, 0.5) (1, 2, 3, 4)", WIDTH, HEIGHT).summary() == {"points": [(8, 24)], "boxes": [(1, 2, 3, 4)]}
