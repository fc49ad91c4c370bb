"""The extraction table: replies and the verdicts the EV rules give them.

Choices (PCA-EVAL): the lenient rule's letter and branch, and the strict rule's letter. Points
(Where2Place): see test_ev_points.py. Every branch of each parser appears, malformed replies too.
"""

from __future__ import annotations

import pytest
from flageval.datasets.options import lenient_choice, strict_choice

# PCA-EVAL Domestic Robot item 0 (gold A).
ACTIONS = ["Start the stoveburner to heat the pan.", "Put eggs into Microwave.", "Break the eggs and pour into the pan.",
           "Start the induction cooker to heat the pan.", "Look for eggs.", "Pick up eggs."]
# One option's text inside another's.
NESTED = ["Open the fridge.", "Open the fridge door and take the milk.", "Close the fridge."]

CHOICES = [
    # reply, options, lenient letter, lenient rule, strict letter
    ("The answer is (A).", ACTIONS, "A", "declared", "A"),
    ("Answer: B", ACTIONS, "B", "declared", "B"),
    ("**Answer:** C", ACTIONS, "C", "declared", "C"),
    ("So the answer is **D**", ACTIONS, "D", "declared", "D"),
    ("I choose E.", ACTIONS, "E", "declared", "E"),
    ("Option F is the best next step.", ACTIONS, "F", "declared", "F"),
    ("Select option B.", ACTIONS, "B", "declared", "B"),
    ("The best answer would be **(C)**", ACTIONS, "C", "declared", "C"),
    ("Final choice - D", ACTIONS, "D", "declared", "D"),
    ("Reasons: the pan is cold.\nAnswer: [A]", ACTIONS, "A", "declared", "A"),
    ("The answer is (A). On reflection, the answer is (C).", ACTIONS, "C", "declared", None),  # strict: two letters
    ("The answer is (A), so answer: A.", ACTIONS, "A", "declared", "A"),
    ("The answer is G.", ACTIONS, "G", "declared", "G"),  # past the last option: kept, scores wrong
    ("Answer: A good first step is to pick up eggs.", ACTIONS, "F", "text", None),  # "A" is an article here
    ("A", ACTIONS, "A", "bare", "A"),
    ("(B)", ACTIONS, "B", "bare", "B"),
    ("C.", ACTIONS, "C", "bare", "C"),
    ("**D**", ACTIONS, "D", "bare", "D"),
    ("e", ACTIONS, "E", "bare", "E"),  # a lower-case letter counts only as the whole reply
    ("[F]", ACTIONS, "F", "bare", "F"),
    ("<answer>(E)</answer>", ACTIONS, "E", "bare", "E"),
    ("(A) Start the stoveburner to heat the pan.", ACTIONS, "A", "leading", None),
    ("B. Put eggs into Microwave.", ACTIONS, "B", "leading", None),
    ("We hold the eggs already.\nC) Break the eggs and pour into the pan.", ACTIONS, "C", "leading", None),
    ("D: heat with the induction cooker", ACTIONS, "D", "leading", None),
    ("Start the stoveburner to heat the pan.", ACTIONS, "A", "text", "A"),
    ("start the   STOVEBURNER to heat the pan", ACTIONS, "A", "text", "A"),
    ("The robot should look for eggs first.", ACTIONS, "E", "text", None),
    ("Rather than put eggs into microwave, start the stoveburner to heat the pan.", ACTIONS, "A", "text", None),
    ("Open the fridge door and take the milk.", NESTED, "B", "text", "B"),  # "Open the fridge" is inside it
    ("<think>The answer is (B).</think>The answer is (D).", ACTIONS, "D", "declared", "D"),
    ("<think>maybe C</think>\n<answer>Start the stoveburner to heat the pan.</answer>", ACTIONS, "A", "text", "A"),
    ("The answer is (a).", ACTIONS, None, None, None),  # lower case inside a sentence: not a letter
    ("answer: c", ACTIONS, None, None, None),
    ("I cannot tell from this picture.", ACTIONS, None, None, None),
    ("Answer:", ACTIONS, None, None, None),
    ("", ACTIONS, None, None, None),
]


@pytest.mark.parametrize(("reply", "options", "letter", "rule", "strict"), CHOICES, ids=[repr(c[0])[:40] for c in CHOICES])
def test_choice_table(reply, options, letter, rule, strict):
    chosen = lenient_choice(reply, options)
    assert (chosen.letter, chosen.rule) == (letter, rule)
    assert strict_choice(reply, options).letter == strict
