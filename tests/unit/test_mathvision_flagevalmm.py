"""MathVision against a FlagEvalMM checkout, live: set FLAGEVALMM_SRC to its root (a directory holding
flagevalmm/ and tasks/math_vision/) to run these. Its modules are loaded from there, with stand-ins
for the imports the compared functions do not use (torch, the registry, the model base class).

Compared: all 304 prompts and message parts (image bytes included), the fidelity table and a few
thousand generated replies (verdicts), and the Where2Place-style point scoring.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import sys
import types
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir, get_dataset
from flageval.datasets.mathvision import grade_reply

SRC = Path(os.environ["FLAGEVALMM_SRC"]) if os.environ.get("FLAGEVALMM_SRC") else None
DATA = default_data_dir()
pytestmark = [
    pytest.mark.skipif(SRC is None, reason="set FLAGEVALMM_SRC to a FlagEvalMM checkout"),
    pytest.mark.skipif(not (DATA / "mathvision" / "testmini.jsonl").is_file(), reason="no MathVision data"),
]

REJECT = ("Error code", "Can not answer because of", "Input data may contain inappropriate content")


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


class _ApiModel:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self.system_prompt = None


@pytest.fixture(scope="module")
def flagevalmm():
    """FlagEvalMM's modules, loaded from the checkout under private names; sys.modules restored after."""
    saved = dict(sys.modules)

    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__path__ = []
        module.__dict__.update(attrs)
        sys.modules[name] = module

    def load(name, relative):
        spec = importlib.util.spec_from_file_location(name, SRC / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    for name in ("torch", "torch.utils", "flagevalmm", "flagevalmm.common", "flagevalmm.dataset", "flagevalmm.models",
                 "flagevalmm.evaluator", "flagevalmm.prompt"):
        stub(name)
    stub("torch.utils.data", Dataset=object)
    stub("flagevalmm.registry", DATASETS=_Registry(), PROMPTS=_Registry())
    stub("flagevalmm.common.const", FLAGEVALMM_DATASETS_CACHE_DIR="/nonexistent")
    stub("flagevalmm.common.logger", get_logger=logging.getLogger)
    stub("flagevalmm.common.video_utils", load_image_or_video=None)
    stub("flagevalmm.dataset.utils", get_data_root=lambda **kwargs: kwargs.get("data_root"))
    stub("flagevalmm.models.base_api_model", BaseApiModel=_ApiModel)
    stub("flagevalmm.models.api_response", ApiResponse=object, ApiUsage=object)
    try:
        modules = types.SimpleNamespace(
            pre_process=load("flagevalmm.evaluator.pre_process", "flagevalmm/evaluator/pre_process.py"),
            template=load("flagevalmm.prompt.prompt_template", "flagevalmm/prompt/prompt_template.py"),
            tools=load("flagevalmm.prompt.prompt_tools", "flagevalmm/prompt/prompt_tools.py"),
            vqa=load("flagevalmm.dataset.vqa_base_dataset", "flagevalmm/dataset/vqa_base_dataset.py"),
            http=load("flagevalmm.models.http_client", "flagevalmm/models/http_client.py"),
            evaluate=load("_fevmm_mathvision_evaluate", "tasks/math_vision/evaluate.py"),
            task=load("_fevmm_mathvision_task", "tasks/math_vision/math_vision_test.py"),
            points=load("_fevmm_point_utils", "flagevalmm/evaluator/point_utils.py"),
        )
        yield modules
    finally:
        for name in [n for n in sys.modules if n not in saved]:
            del sys.modules[name]
        sys.modules.update(saved)


def processed_annotations(flagevalmm, tmp_path):
    """Run the task's process.py over the shipped file (its hub download replaced by our rows)."""
    rows = [json.loads(line) for line in (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines()]
    for row in rows:
        row["decoded_image"] = None  # the image files exist: process.py does not save them
    sys.modules["datasets"] = types.SimpleNamespace(load_dataset=lambda path, split: rows)
    sys.modules["tqdm"] = types.SimpleNamespace(tqdm=lambda x: x)
    spec = importlib.util.spec_from_file_location("_fevmm_process", SRC / "tasks/math_vision/process.py")
    process = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(process)

    class Config(dict):
        __getattr__ = dict.get

    out = tmp_path / "processed"
    (out / "testmini").mkdir(parents=True)
    (out / "testmini" / "images").symlink_to(DATA / "mathvision" / "images")
    process.process(Config(dataset_path="-", split="testmini", processed_dataset_path=str(out)))
    return out / "testmini"


def test_prompts_and_messages(flagevalmm, tmp_path):
    root = processed_annotations(flagevalmm, tmp_path)
    theirs = flagevalmm.vqa.VqaBaseDataset.__new__(flagevalmm.vqa.VqaBaseDataset)
    theirs.data_root = str(root)
    theirs.annotations = theirs.load_annotations("data.json")
    config = dict(flagevalmm.task.dataset["prompt_template"])
    config.pop("type")
    theirs.prompt_template = flagevalmm.template.PromptTemplate(**config)
    theirs.with_label = False
    client = flagevalmm.http.HttpClient(model_name="m", url="http://localhost/v1/chat/completions", api_key="EMPTY")

    ours = {item.id.split("/", 1)[1]: item for item in get_dataset("mathvision", DATA).items("chat")}
    assert len(theirs) == len(ours) == 304
    for index in range(len(theirs)):
        sample = theirs[index]
        messages = client.build_message(sample["question"], multi_modal_data={"image": sample["img_path"]})
        item = ours[sample["question_id"]]
        assert item.meta.problem.text == sample["question"]
        assert item.bodies[0]["messages"] == messages
        assert item.meta.problem.data["multiple_choice"] == (sample["type"] == "multiple-choice")


def flagevalmm_verdict(flagevalmm, target, multiple_choice, reply):
    answer = reply.split("</think>", 1)[1] if "</think>" in reply else reply
    if answer.startswith(REJECT):
        return None
    prediction = {"question_id": "1", "answer": answer}
    annotation = {"1": {"answer": target, "question_type": "multiple-choice" if multiple_choice else "open"}}
    flagevalmm.evaluate.get_result(annotation, [prediction])
    return bool(prediction["correct"])


def test_fidelity_table(flagevalmm):
    from test_mathvision_fidelity import TABLE

    for why, target, multiple_choice, reply, _, correct, _ in TABLE:
        assert flagevalmm_verdict(flagevalmm, target, multiple_choice, reply) == correct, why


FRAGMENTS = ["The answer is ", "the answer is ", "\\boxed{", "}", "{", "A", "B", "C", "D", "E", "a", " ", ".", "\n",
             "is ", "12", "6", "61", "(", ")", "Answer:", "answer:", "The final answer is ", "$", "\\frac{1}{2}",
             "\\frac12", "\\sqrt", "\\sqrt{3}", "=", "\\approx", "(C)", "</think>", "<think>", "0.5", ".5", "km",
             "units", "\\text{ cm}", ",", "-", "答案是", "NOTE", "option is ", "{}", "3/4", "2^3", "4.8", "2.5",
             "(3,-4)", "[1,2]", "x", "\\dfrac{5}{2}", "^\\circ", "\\%", "\\left(", "\\right)", "Error code",
             "The correct answer is ", " D.", " (B).", "(E) E\n", "If ", "Therefore ", "oxed{", "\\!", "\\\\",
             "1,680", "−2", "nan", "1e3", " should be ", "the answer should be "]


def test_generated_replies(flagevalmm):
    rows = [json.loads(line) for line in (DATA / "mathvision" / "testmini.jsonl").read_text().splitlines()]
    targets = [(row["answer"], bool(row["options"])) for row in rows]
    rng = random.Random(int(os.environ.get("FLAGEVALMM_FUZZ_SEED", "0")))
    for _ in range(int(os.environ.get("FLAGEVALMM_FUZZ_N", "1500"))):
        target, multiple_choice = rng.choice(targets)
        reply = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 8)))
        grade = grade_reply(target, reply, multiple_choice)
        ours = None if grade.rejected else grade.correct
        assert ours == flagevalmm_verdict(flagevalmm, target, multiple_choice, reply), (target, reply)


def test_points(flagevalmm, tmp_path):
    import numpy as np
    from flageval.datasets.ev import mask_score, text_points
    from PIL import Image

    width, height = 64, 48
    mask = (np.random.default_rng(0).random((height, width)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    fragments = ["(", ")", ",", " ", "0.5", "0.25", "12", "-3", "70", "1.0", "\n", "Answer: [", "]", "0.9", "33",
                 "(10, 20)", "(0.1, 0.2, 0.5, 0.6)", "(5, 5, 30, 40)"]
    rng = random.Random(1)
    for _ in range(1000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(1, 12)))
        with Image.open(tmp_path / "mask.png") as img:
            theirs = flagevalmm.points.calculate_mask_score(flagevalmm.points.text2pts(text, width, height), img)
        ours = mask_score(*text_points(text, width, height), tmp_path / "mask.png")
        assert ours == pytest.approx(theirs, abs=1e-12), text
