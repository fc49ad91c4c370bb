"""MathVision against FlagEvalMM's own code: reply verdicts, prompts and message parts.

The expected verdicts were produced by running FlagEvalMM's tasks/math_vision/evaluate.py
(`get_result`, with flagevalmm/evaluator/pre_process.py) at commit fef27ec6, with latex2sympy2 1.9.1,
on each reply below; the expected prompts and parts by running its process.py, VqaBaseDataset,
PromptTemplate and HttpClient.build_interleaved_message over the shipped testmini.jsonl.
test_mathvision_flagevalmm.py repeats that comparison live when a FlagEvalMM checkout is at hand.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.mathvision import grade_reply

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data")

# (what it exercises, reference answer, multiple choice, reply,
#  FlagEvalMM's extracted answer, FlagEvalMM's verdict, verdict without the substring rule);
# the last three are None for replies FlagEvalMM rejects (left out of the denominator).
TABLE = [
    ("shortcut: ends ' D.'", 'D', True, 'So the kittens are in picture D.', 'd', True, True),
    ("shortcut: ends ' (B).'", 'B', True, 'The answer is (B).', 'b', True, True),
    ("shortcut: starts 'C\\n'", 'C', True, 'C\nBecause the ladybird sits there.', 'c', True, True),
    ("shortcut: starts '(A)\\n'", 'A', True, '(A)\nThe triangle fits.', 'a', True, True),
    ("shortcut: starts '(E) E\\n'", 'E', True, '(E) E\nit is the only one', 'e', True, True),
    ("shortcut: first letter wins, fallback reads 'answer is B'", 'B', True, 'A\nThe answer is B.', 'a', True, True),
    ("shortcut: 'It is E.'", 'E', True, 'It is E.', 'e', True, True),
    ('shortcut: wrong letter, fallback finds none other', 'C', True, 'I pick D.', 'd', False, False),
    ('shortcut on an open question: letter is not the number', '6', False, 'Count them: B.', 'b', False, False),
    ("is-rule: 'is 6.'", '6', False, 'The number of bricks is 6.', '6', True, True),
    ('is-rule: decimal', '3.5', False, 'This is 3.5', '3.5', True, True),
    ('is-rule: float() accepts surrounding spaces', '12', False, 'The total is  12 ', '12', True, True),
    ('is-rule: nan is a float', '6', False, 'The answer is nan', 'nan', False, False),
    ('is-rule: underscores are a float', '1000', False, 'The sum is 1_000', '1_000', False, False),
    ('is-rule: 1e3', '1000', False, 'The result is 1e3', '1e3', False, False),
    ("is-rule: last 'is ' wins", '6', False, 'The first answer is 5 and the real one is 6', '6', True, True),
    ('is-rule: words after the number: substring', '6', False, 'It is 6 apples.', 'itis6apples', True, False),
    ('is-rule: 5.0 equals 5', '5', False, 'The value is 5.0', '5.0', True, True),
    ("flag: 'The final answer is' (capital variant)", '12', False, 'Let me think.\nThe final answer is 12.\nMore text', '12', True, True),
    ("flag: 'the answer is' then '. '", '7', False, 'So the answer is 7. Because seven fits.', '7', True, True),
    ("flag: 'The correct answer is', rest of line kept", '4', False, 'The correct answer is 4, since the rows add up', '4,sincetherowsaddup', True, False),
    ("flag: 'the answer should be'", '9', False, 'Hence the answer should be 9', '9', True, True),
    ("flag: 'Answer:' has no capital variant", '16', False, 'Answer: 16', 'answer:16', True, False),
    ("flag: 'Answer:' leaves 'answer:16': gt 6 is a substring", '6', False, 'Answer: 16', 'answer:16', True, False),
    ("flag: lowercase 'answer:'", '3', False, 'final answer: 3', '3', True, True),
    ('flag: strip applies without a flag', '42', False, '   42   ', '42', True, True),
    ('flag: answer on the next line', '61', False, 'the answer is\n61', '61', True, True),
    ('flag: answer, then a sentence', '61', False, 'the answer is 61. So we are done', '61', True, True),
    ('flag: letter for multiple choice', 'D', True, 'The answer is D. Because E is wrong.', 'd', True, True),
    ('flag: option wording on an open question: no fallback', 'C', False, 'The answer is option C', 'optionc', False, False),
    ('box: plain', '61', False, '\\boxed{61}', '61', True, True),
    ('box: the last of two', '5', False, 'First \\boxed{3} then \\boxed{5}', '5', True, True),
    ('box: two boxes, last is 16, gt 6 substring', '6', False, '\\boxed{2}\\boxed{16}', '16', True, False),
    ('box: greedy to the last brace', '5', False, '\\boxed{5} is the result, so {x}', '5}istheresult,so{x', True, True),
    ("box: after 'The answer is'", '5', False, 'The answer is \\boxed{5}', '5', True, True),
    ('box: frac 5/2 = 2.5', '2.5', False, '\\boxed{\\frac{5}{2}}', '\\frac{5}{2}', True, True),
    ('box: 24/5 = 4.8', '4.8', False, '\\boxed{24/5}', '\\frac{24}{5}', True, True),
    ('box: 3.004 rounds to 3', '3', False, '\\boxed{3.004}', '3.004', True, True),
    ('box: 2^3 = 8', '8', False, '\\boxed{2^3}', '2^3', True, True),
    ('box: 1,680 = 1680', '1680', False, '\\boxed{1,680}', '1,680', True, True),
    ('box: sqrt(81) is not 9', '9', False, '\\boxed{\\sqrt{81}}', '\\sqrt{81}', False, False),
    ('box: unicode minus', '-2', False, '\\boxed{−2}', '−2', False, False),
    ('box: -2 right', '-2', False, '\\boxed{-2}', '-2', True, True),
    ('box: 2 is not -2', '-2', False, '\\boxed{2}', '2', False, False),
    ('box: 16 for 6 (substring)', '6', False, '\\boxed{16}', '16', True, False),
    ('box: 12 for 2 (substring)', '2', False, '\\boxed{12}', '12', True, False),
    ('box: -12 for 2 (substring)', '2', False, '\\boxed{-12}', '-12', True, False),
    ('box: x = 12', '12', False, '\\boxed{x = 12}', '12', True, True),
    ('box: approx', '3.14', False, '\\boxed{\\approx 3.14}', '3.14', True, True),
    ('box: degrees', '90', False, '\\boxed{90^\\circ}', '90', True, True),
    ('box: percent', '50', False, '\\boxed{50\\%}', '50', True, True),
    ('box: \\text{ cm} stays as {cm}', '5', False, '\\boxed{5 \\text{ cm}}', '5{cm}', True, False),
    ('box: units', '12', False, '\\boxed{12 units}', '12', True, True),
    ('box: km', '3', False, '\\boxed{3 km}', '3', True, True),
    ('box: dfrac 1/2', '0.5', False, '\\boxed{\\dfrac{1}{2}}', '\\frac{1}{2}', True, True),
    ('box: .5', '0.5', False, '\\boxed{.5}', '\\frac{1}{2}', True, True),
    ('box: \\frac12 without braces (no sqrt, not fixed)', '0.5', False, '\\boxed{\\frac12}', '\\frac12', False, False),
    ('box: \\sqrt2', '1.41', False, '\\boxed{\\sqrt2}', '\\sqrt{2}', False, False),
    ('box: dollars', '61', False, '\\boxed{$61$}', '61', True, True),
    ('box: 4.80', '4.8', False, '$\\boxed{4.80}$', '4.80', True, True),
    ('box: 2.504 rounds to 2.5', '2.5', False, '\\boxed{2.504}', '2.504', True, True),
    ("box: 2.51 holds '2.5'", '2.5', False, '\\boxed{2.51}', '2.51', True, False),
    ('box: infinity', '6', False, '\\boxed{\\infty}', '\\infty', False, False),
    ('box: {} removed first', '5', False, '\\boxed{}5', '\\boxed5', True, False),
    ('box: no brace after boxed', '3', False, '\\boxed 3', '\\boxed3', True, False),
    ('tuple: same', '(3,-4)', False, '\\boxed{(3,-4)}', '(3,-4)', True, True),
    ('tuple: spaces', '(3,-4)', False, '\\boxed{(3, -4)}', '(3,-4)', True, True),
    ('tuple: swapped', '(3,-4)', False, '\\boxed{(4,-3)}', '(4,-3)', False, False),
    ('tuple: 3.0', '(3,-4)', False, '\\boxed{(3.0,-4)}', '(3.0,-4)', True, True),
    ('tuple: left/right', '(3,-4)', False, '\\boxed{\\left(3,-4\\right)}', '(3,-4)', True, True),
    ('tuple: brackets', '(3,-4)', False, '\\boxed{[3,-4]}', '[3,-4]', False, False),
    ('letter box', 'A', True, '\\boxed{A}', 'a', True, True),
    ('letter box (B)', 'B', True, '\\boxed{(B)}', 'b', True, True),
    ('letter box \\text{C}', 'C', True, '\\boxed{\\text{C}}', 'c', True, True),
    ('letter box \\text{(D)}', 'D', True, 'Final: \\boxed{\\text{(D)}}', 'd', True, True),
    ('letter box wrong; fallback reads the box', 'E', True, '\\boxed{D}', 'd', False, False),
    ('letter box on open question', 'C', False, '\\boxed{C}', 'c', True, True),
    ('letter box wrong on open question', 'C', False, '\\boxed{A}', 'a', False, False),
    ("fallback: capitals leak: 'AC' → A", 'C', True, 'After analysis, option C is right', 'afteranalysis,optioncisright', False, False),
    ('fallback: capitals leak: counted right for A', 'A', True, 'After analysis, option C is right', 'afteranalysis,optioncisright', True, True),
    ("fallback: 'option is'", 'B', True, 'The correct option is B', 'thecorrectoptionisb', True, True),
    ("fallback: '(C) is correct'", 'C', True, '(C) is correct', 'ciscorrect', True, True),
    ("fallback: [INST] class eats N,T: 'NOTE' → 'OE'", 'B', True, 'NOTE: choose B', 'note:chooseb', False, False),
    ('fallback: Chinese keyword', 'B', True, '答案是 B', '答案是b', True, True),
    ("fallback: 'C.' at the start", 'C', True, 'C. because it is symmetric', 'c.becauseitissymmetric', True, True),
    ("fallback: 'The' removed", 'E', True, 'Therefore E', 'thereforee', True, True),
    ('fallback: single lower-case letter', 'C', True, 'c', 'c', True, True),
    ('fallback: no letter', 'D', True, 'I cannot tell.', 'icannottell', False, False),
    ('empty reply, open', '6', False, '', '', False, False),
    ('empty reply, multiple choice', 'D', True, '', '', False, False),
    ('think: answer after </think>', '7', False, '<think>maybe \\boxed{5}</think>\n\\boxed{7}', '7', True, True),
    ('think: reasoning not scored', '5', False, '<think>maybe \\boxed{5}</think>\n\\boxed{7}', '7', False, False),
    ('think: unclosed think is scored', '5', False, '<think>still thinking \\boxed{5}', '5', True, True),
    ('think: split at the first </think> only', '3', False, 'a</think>b</think>\\boxed{3}', '3', True, True),
    ('rejected: Error code', '6', False, 'Error code: 500 internal', None, None, None),
    ('rejected: Can not answer', 'D', True, 'Can not answer because of policy', None, None, None),
    ('rejected: inappropriate', '6', False, 'Input data may contain inappropriate content.', None, None, None),
    ('not rejected: leading space', '6', False, ' Error code 6', 'errorcode6', True, False),
    ('rejected after </think>', '6', False, '<think>x</think>Error code: 400', None, None, None),
]


def test_table_is_broad():
    assert len(TABLE) >= 60
    assert sum(row[5] is None for row in TABLE) >= 3  # rejections
    assert sum(row[5] is not None and row[5] != row[6] for row in TABLE) >= 10  # substring-only verdicts
    assert sum(row[2] for row in TABLE) >= 25  # multiple choice


@pytest.mark.parametrize(("why", "target", "multiple_choice", "reply", "answer", "correct", "strict"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_reply_scores_as_flagevalmm(why, target, multiple_choice, reply, answer, correct, strict):
    grade = grade_reply(target, reply, multiple_choice)
    assert grade.note is None
    if correct is None:
        assert grade.rejected is not None
        return
    assert grade.rejected is None
    assert (grade.answer, grade.correct, grade.strict) == (answer, correct, strict)


INSTRUCTION = ('Please solve the problem and put your answer in one "\\boxed{}". If it is a multiple choice question, '
               'only one letter is allowed in the "\\boxed{}".')
OPTIONS = "\nA. A\nB. B\nC. C\nD. D\nE. E"

# id → (prompt text, [text part | ("image", sha256 of FlagEvalMM's data URL)]), from FlagEvalMM's own code.
PROMPTS = {
    "4": (INSTRUCTION + "\nHow many different digits can you find in this picture?\n<image 1>",
          [INSTRUCTION + "\nHow many different digits can you find in this picture?\n",
           ("image", "cb5e73c29ce006c07bb9658795eeb4e9749e5ab92885f867b2c6090fee488116")]),
    "6": (INSTRUCTION + "\nMisty the cat has five kittens: two of them are striped, one spotty, the rest of them are "
          "absolutely white. In which picture can we see the kittens of Misty, knowing that the ears of one of them are "
          "of different colour?\n<image 1>" + OPTIONS,
          [INSTRUCTION + "\nMisty the cat has five kittens: two of them are striped, one spotty, the rest of them are "
           "absolutely white. In which picture can we see the kittens of Misty, knowing that the ears of one of them "
           "are of different colour?\n",
           ("image", "804b58aa053b625e69d3f6c4069cc9b12815a9fd47670be0cc9851e5e1281470"),
           OPTIONS]),
    # two placeholders: the image goes first, the literal tags stay
    "34": (INSTRUCTION + "\n<image 1> Max has cut a rectangle into two pieces. One piece looks like:\n<image1>\nWhat "
           "does the other piece look like?\n<image2>" + OPTIONS,
           [INSTRUCTION + "\n",
            ("image", "ef8f477d642350c367f3db93aa7899a3107dbba010bbe6c58ad58530810b7759"),
            " Max has cut a rectangle into two pieces. One piece looks like:\n<image1>\nWhat does the other piece look "
            "like?\n<image2>" + OPTIONS]),
    # no placeholder in the question, tags in the options
    "2673": (INSTRUCTION + "\n<image 1> Jorge's teacher asks him to plot all the ordered pairs $ (w, l)$ of positive "
             "integers for which $ w$ is the width and $ l$ is the length of a rectangle with area 12. What should his "
             "graph look like?\nA. <image1>\nB. <image2>\nC. <image3>\nD. <image4>\nE. <image5>",
             [INSTRUCTION + "\n",
              ("image", "116c1fd7c4954dca891228822c3684ac045c4e8dbe5557e149d7953fc1413cad"),
              (" Jorge's teacher asks him to plot all the ordered pairs $ (w, l)$ of positive integers for which $ w$ is "
              "the width and $ l$ is the length of a rectangle with area 12. What should his graph look like?\nA. "
              "<image1>\nB. <image2>\nC. <image3>\nD. <image4>\nE. <image5>")]),
    # one placeholder in the question (spaced), more in the options (left alone)
    "2659": (INSTRUCTION + "\nTess runs counterclockwise around rectangular block JKLM. She lives at corner J. Which "
             "graph could represent her straight-line distance from home?\n\n<image 1>\nA. <image2>\nB. <image3>\nC. "
             "<image4>\nD. <image5>\nE. <image6>",
             [INSTRUCTION + "\nTess runs counterclockwise around rectangular block JKLM. She lives at corner J. Which "
              "graph could represent her straight-line distance from home?\n\n",
              ("image", "5f7968594b957f601472f2e513501d6409503edf9882a4ce7140d89d490298a3"),
              "\nA. <image2>\nB. <image3>\nC. <image4>\nD. <image5>\nE. <image6>"]),
}
PILLOW_OF_THE_HASHES = "13.0.0"  # JPEG bytes depend on the encoder build


@pytest.fixture(scope="module")
def items():
    dataset = get_dataset("mathvision", DATA)
    wanted = {f"mathvision/{i}" for i in PROMPTS}
    return {item.id.split("/", 1)[1]: item for item in dataset.items("chat") if item.id in wanted}


@pytest.mark.parametrize("problem_id", sorted(PROMPTS))
def test_prompt_and_parts_equal_flagevalmm(items, problem_id):
    text, expected = PROMPTS[problem_id]
    item = items[problem_id]
    assert item.meta.problem.text == text
    (body,) = item.bodies
    assert set(body) == {"messages", "max_tokens"} and body["max_tokens"] == 32768  # no temperature, as FlagEvalMM
    (message,) = body["messages"]
    assert message["role"] == "user"
    parts = message["content"]
    assert len(parts) == len(expected)
    for part, want in zip(parts, expected):
        if isinstance(want, tuple):
            assert part["type"] == "image_url"
            assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
        else:
            assert part == {"type": "text", "text": want}


@pytest.mark.parametrize("problem_id", sorted(PROMPTS))
def test_image_is_the_file_as_rgb_jpeg_95(items, problem_id):
    from PIL import Image

    part = next(p for p in items[problem_id].bodies[0]["messages"][0]["content"] if p["type"] == "image_url")
    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as sent, Image.open(DATA / "mathvision" / "images" / f"{problem_id}.jpg") as file:
        assert sent.format == "JPEG" and sent.mode == "RGB"
        assert sent.size == file.size
        # quality 95: libjpeg's scaled luminance table starts with 2 (quality 75 would give 8)
        assert sent.quantization[0][0] == 2


@pytest.mark.parametrize("problem_id", sorted(PROMPTS))
def test_image_bytes_equal_flagevalmm(items, problem_id):
    import PIL

    if PIL.__version__ != PILLOW_OF_THE_HASHES:
        pytest.skip(f"hashes recorded with Pillow {PILLOW_OF_THE_HASHES}")
    part = next(p for p in items[problem_id].bodies[0]["messages"][0]["content"] if p["type"] == "image_url")
    expected = next(w for w in PROMPTS[problem_id][1] if isinstance(w, tuple))[1]
    assert hashlib.sha256(part["image_url"]["url"].encode()).hexdigest() == expected


def test_every_problem_is_built_the_same_way():
    """Structure of all 304 requests: FlagEvalMM's placeholder rules over the shipped file."""
    rows = {str(r["id"]): r for r in map(json.loads, (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines())}
    dataset = get_dataset("mathvision", DATA)
    counts = {"interleaved": 0, "image first": 0}
    for item in dataset.items("chat"):
        row = rows[item.id.split("/", 1)[1]]
        parts = item.bodies[0]["messages"][0]["content"]
        assert [p["type"] for p in parts].count("image_url") == 1
        assert parts[0]["type"] == "text" and parts[0]["text"].startswith(INSTRUCTION + "\n")
        if row["question"].count("<image") == 1:
            counts["interleaved"] += 1
        else:
            counts["image first"] += 1
            assert parts[0]["text"] == INSTRUCTION + "\n" and parts[1]["type"] == "image_url"
        assert item.meta.problem.data["multiple_choice"] == bool(row["options"])
    assert counts == {"interleaved": 246, "image first": 58}
    assert sum(p.data["multiple_choice"] for p in dataset.problems) == 190
