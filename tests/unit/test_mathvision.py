"""MathVision replies scored by our code against verdicts taken from FlagEvalMM's own code.

How the expected values were obtained: each (target, question type, reply) below was run through
FlagEvalMM's tasks/math_vision/evaluate.py `get_result` (with flagevalmm/evaluator/pre_process.py),
commit fef27ec6, latex2sympy2 1.9.1, in a scratch directory outside this repository. Before
get_result the reply was cut after its first `</think>` (model_adapter.py) and replies starting with a
reject prefix were set aside (base_evaluator.filter_rejected); those rows carry None. The extracted
answer is the `model_answer` get_result passes to `is_equal`; the strict verdict is `is_equal` alone,
or the multiple-choice fallback (`evaluate_multiple_choice`) when it applies, that is FlagEvalMM's
verdict without the substring rule. Nothing here was computed by our code.

This table was written separately from test_mathvision_fidelity.py; its replies differ, so the two
together cover each rule from more than one side.
"""

from __future__ import annotations

import pytest
from flageval.api import SampleRecord
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.mathvision import grade_reply
from flageval.engine.types import Reply
from flageval.mock_model.answers import default_answerer, intended_accuracy

# (target, multiple choice, reply, FlagEvalMM's extracted answer, its verdict, verdict without the substring rule)
TABLE = [
    # letter shortcut
    ('D', True, 'So the kitten is D.', 'd', True, True),
    ('D', True, 'The kitten must be (D).', 'd', True, True),
    ('D', True, 'D\nBecause the colours differ.', 'd', True, True),
    ('D', True, '(D)\nBecause the colours differ.', 'd', True, True),
    ('D', True, '(D) D\nBecause the colours differ.', 'd', True, True),
    ('D', True, 'I pick B.', 'b', False, False),
    ('A', True, 'E\nwhich means it is A.', 'a', True, True),
    ('E', True, 'E\nwhich means it is A.', 'a', True, True),
    ('C', False, 'The answer is C.', 'c', True, True),
    # "is " number rule
    ('6', False, 'The count is 6.', '6', True, True),
    ('3', False, 'So the length is 2.996', '2.996', True, True),
    ('7', False, 'It is  7 ', '7', True, True),
    ('1000', False, 'The total is 1e3', '1e3', False, False),
    ('6', False, 'This is 5 and the answer is 6', '6', True, True),
    ('2', False, 'There is 1 way, so the answer is 12.', '12', True, False),
    ('5', False, '\\boxed{5} is 6', '6', False, False),
    ('6', False, '\\boxed{5} is 6', '6', True, True),
    ('5', False, 'Option count is 5.', '5', True, True),
    # answer flags
    ('61', False, 'Thus the answer is: 61', '61', True, True),
    ('61', False, 'Answer: 61\nI counted 3 petals.', 'answer:61icounted3petals', True, False),
    ('4.8', False, 'Answer: 24/5\nSo.', 'answer:24/5so', False, False),
    ('4.8', False, 'answer: 24/5\nSo.', '\\frac{24}{5}', True, True),
    ('4.8', False, 'the final answer is 4.8. Done', '4.8', True, True),
    ('2.5', False, 'The final answer is 2.5', '2.5', True, True),
    ('B', True, 'the correct answer is B. Because of symmetry.', 'b', True, True),
    ('7', False, 'the answer should be 7 bricks', '7bricks', True, False),
    ('6', False, 'the answer should be 7 bricks', '7bricks', False, False),
    ('6', False, 'the answer is 5\nthe final answer is 6', '6', True, True),
    ('5', False, 'the answer is 5\nthe final answer is 6', '6', False, False),
    ('61', False, 'The answer is $61$.', '61', True, True),
    ('8', False, 'The answer is 8 cm\nsince each side is 2 cm', '8cm', True, False),
    # boxes
    ('61', False, '\\boxed{61}', '61', True, True),
    ('6', False, '\\boxed{16}', '16', True, False),
    ('61', False, '\\boxed{6}', '6', False, False),
    ('6', False, 'First \\boxed{5}, then \\boxed{6}', '6', True, True),
    ('5', False, 'First \\boxed{5}, then \\boxed{6}', '6', False, False),
    ('5', False, '\\boxed{5} (see step {3})', '5}(seestep{3', True, True),
    ('2.5', False, '\\boxed{\\frac{5}{2}}', '\\frac{5}{2}', True, True),
    ('4.8', False, '\\boxed{\\dfrac{24}{5}}', '\\frac{24}{5}', True, True),
    ('4.8', False, '\\boxed{24/5}', '\\frac{24}{5}', True, True),
    ('12', False, '\\boxed{x = 12}', '12', True, True),
    ('3.14', False, '\\boxed{\\approx 3.14}', '3.14', True, True),
    ('8', False, '\\boxed{2^3}', '2^3', True, True),
    ('1680', False, '\\boxed{1,680}', '1,680', True, True),
    ('9', False, '\\boxed{\\sqrt{81}}', '\\sqrt{81}', False, False),
    ('3.14', False, '\\boxed{\\pi}', '\\pi', False, False),
    ('-2', False, '\\boxed{−2}', '−2', False, False),
    ('-2', False, '\\boxed{-2}', '-2', True, True),
    ('0.5', False, '\\boxed{.5}', '\\frac{1}{2}', True, True),
    ('50', False, '\\boxed{50\\%}', '50', True, True),
    ('90', False, '\\boxed{90^\\circ}', '90', True, True),
    ('12', False, '\\boxed{12 \\text{ cm}}', '12{cm}', True, False),
    ('5', False, '\\boxed{5 km}', '5', True, True),
    ('(3,-4)', False, '\\boxed{(3,-4)}', '(3,-4)', True, True),
    ('(3,-4)', False, '\\boxed{(3, -4)}', '(3,-4)', True, True),
    ('(3,-4)', False, '\\boxed{(3.001,-4)}', '(3.001,-4)', False, False),
    ('C', False, '\\boxed{C}', 'c', True, True),
    ('6', False, '\\boxed{ 6 }', '6', True, True),
    ('6', False, '\\boxed{6.00}', '6.00', True, True),
    ('3', False, '\\boxed{2.999}', '2.999', True, True),
    ('4', False, '\\boxed{3.994}', '3.994', True, False),
    ('1.41', False, '\\boxed{\\sqrt2}', '\\sqrt{2}', False, False),
    ('0.5', False, '\\boxed{\\frac12}', '\\frac12', False, False),
    ('0.71', False, '\\boxed{\\frac12\\sqrt{2}}', '\\frac{1}{2}\\sqrt{2}', False, False),
    ('6', False, '\\boxed{}', '\\boxed', False, False),
    ('6', False, '\\boxed{6', '\\boxed{6', True, False),
    ('6', False, 'The result is 5, so \\boxed{6}', '6', True, True),
    ('5', False, '\\boxed{\\$5}', '5', True, True),
    ('6', False, '\\boxed{x=6=y}', 'y', False, False),
    # multiple choice via the box and the fallback
    ('D', True, '\\boxed{D}', 'd', True, True),
    ('D', True, '\\boxed{(D)}', 'd', True, True),
    ('D', True, '\\boxed{\\text{D}}', 'd', True, True),
    ('E', True, '\\boxed{\\mathrm{E}}', '\\mathrme', True, True),
    ('C', True, 'After analysis, option C is right', 'afteranalysis,optioncisright', False, False),
    ('C', True, 'I think option C', 'ithinkoptionc', True, True),
    ('D', True, 'd', 'd', True, True),
    ('B', True, 'B. It has 5 petals', 'b.ithas5petals', True, True),
    ('E', True, 'Correct option: E', 'correctoption:e', True, True),
    ('B', True, 'Answer: B', 'answer:b', True, True),
    ('A', True, 'Of the options, A fits best', 'oftheoptions,afitsbest', False, False),
    ('B', True, '\\boxed{A} or maybe \\boxed{B}', 'b', True, True),
    ('A', True, '\\boxed{A} or maybe \\boxed{B}', 'b', False, False),
    # rejected, empty, reasoning
    ('6', False, 'Error code: 500 Internal Server Error', None, None, None),
    ('D', True, 'Can not answer because of content policy', None, None, None),
    ('6', False, 'Input data may contain inappropriate content.', None, None, None),
    ('6', False, ' Error code: 500', 'errorcode:500', False, False),
    ('6', False, '', '', False, False),
    ('D', True, '', '', False, False),
    ('6', False, '<think>the answer is 5</think>\n\\boxed{6}', '6', True, True),
    ('5', False, '<think>the answer is 5</think>\n\\boxed{6}', '6', False, False),
    ('6', False, 'a</think>b</think>\\boxed{6}', '6', True, True),
    ('6', False, '\\boxed{6}</think>\\boxed{7}', '7', False, False),
]

DATA = default_data_dir()
HAVE_DATA = (DATA / "mathvision" / "testmini.jsonl").is_file()


def test_the_table_covers_every_rule():
    replies = [row[2] for row in TABLE]
    assert len(TABLE) >= 60 and len(set(zip(replies, (r[0] for r in TABLE), strict=True))) == len(TABLE)
    verdicts = [row[4] for row in TABLE]
    assert verdicts.count(True) >= 20 and verdicts.count(False) >= 20 and verdicts.count(None) == 3
    # the substring rule decides some rows, and the fallback others
    assert sum(1 for row in TABLE if row[4] and not row[5]) >= 5
    assert any(row[1] and row[4] and row[3] != row[0].lower() for row in TABLE)


@pytest.mark.parametrize(("target", "multiple_choice", "reply", "answer", "correct", "strict"), TABLE,
                         ids=[f"{i}:{row[2][:30]!r}" for i, row in enumerate(TABLE)])
def test_reply_scores_as_flagevalmm(target, multiple_choice, reply, answer, correct, strict):
    grade = grade_reply(target, reply, multiple_choice)
    if correct is None:
        assert grade.rejected is not None and not grade.correct
        return
    assert grade.rejected is None
    assert (grade.answer, grade.correct, grade.strict) == (answer, correct, strict)


def _record(dataset, target_row, reply: str) -> SampleRecord:
    """Scores `reply` as the dataset scores a sample whose target and type are the row's."""
    problem = next(p for p in dataset.problems
                   if p.target == target_row[0] and p.data["multiple_choice"] == target_row[1])
    item = next(i for i in dataset.items("chat") if i.meta.problem is problem)
    return dataset.score(item, [Reply(text=reply)])


@pytest.mark.skipif(not HAVE_DATA, reason="no MathVision data")
def test_dataset_metrics_over_table_rows():
    """The table's replies scored through the dataset: accuracy, strict accuracy and rejected counts
    follow from the expected verdicts."""
    dataset = get_dataset("mathvision", DATA, limit=40)
    usable = [row for row in TABLE if any(p.target == row[0] and p.data["multiple_choice"] == row[1]
                                          for p in dataset.problems)]
    assert len(usable) >= 15
    records = [_record(dataset, row, row[2]) for row in usable]
    kept = [row for row in usable if row[4] is not None]
    metrics = dataset.aggregate(records)
    assert metrics["accuracy"] == round(sum(r[4] for r in kept) / len(kept) * 100, 2)
    assert metrics["strict_accuracy"] == round(sum(r[5] for r in kept) / len(kept) * 100, 2)
    assert metrics["verdict_differs"] == sum(r[4] != r[5] for r in kept)
    assert metrics["rejected"] == len(usable) - len(kept)


@pytest.mark.skipif(not HAVE_DATA, reason="no MathVision data")
def test_default_reference_model_scores_what_it_intends():
    """The bundled model's replies, scored by our code, give exactly its intended accuracy."""
    dataset = get_dataset("mathvision", DATA, limit=60)
    answerer = default_answerer(DATA, 0.55, 3)
    records = []
    for item in dataset.items("chat"):
        _, content = answerer.chat(item.bodies[0]["messages"], item.bodies[0])
        records.append(dataset.score(item, [Reply(text=content)]))
    assert not answerer.mathvision.image_faults
    assert dataset.aggregate(records)["accuracy"] == intended_accuracy("mathvision", DATA, 0.55, 3, 60)
