"""Running a model's program for code tasks (humaneval): a separate process with CPU-time, memory,
file-size and process-count limits, no network (a new network namespace where the kernel allows
it), a timeout, and a temporary directory removed afterwards.

Inside, the program runs as openai/human-eval's `check_correctness` runs it — `exec` of prompt +
completion + tests in fresh globals, under a `timeout`-second alarm, with stdin unreadable, output
swallowed and the same destructive functions disabled — so a verdict here is its verdict.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 3.0  # code_eval's and human-eval's default, per program
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20
PROCESSES = 64
_CHILD = Path(__file__).with_name("sandbox_child.py")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    result: str  # "passed", "timed out" or "failed: <reason>", as human-eval words it


def network_isolation_available() -> bool:
    """Whether a child can get a network namespace of its own here (root or CAP_SYS_ADMIN)."""
    probe = subprocess.run([sys.executable, "-I", "-c", "import ctypes,sys; sys.exit(ctypes.CDLL(None).unshare(0x40000000) != 0)"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def run_program(program: str, timeout: float = TIMEOUT, *, isolate_network: bool = True) -> Verdict:
    """Run one program (prompt + completion + tests) and say whether it passed."""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="flageval-code-") as workdir:
        source = Path(workdir) / "program.py"
        source.write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        limits = f"{int(timeout) + 2},{MEMORY_BYTES},{FILE_BYTES},{PROCESSES},{int(isolate_network)}"
        process = subprocess.Popen(  # the child sets its own limits before it reads the program
            [sys.executable, "-I", str(_CHILD), str(source), str(timeout), nonce, limits],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # the program's own alarm fires at `timeout`; the interpreter's start is not its time
            out, _ = process.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Verdict(False, "timed out")
        finally:
            _kill_group(process)  # anything it started in its group goes too
    marker = f"{nonce} ".encode()
    for line in reversed(out.splitlines()):
        if line.startswith(marker):
            result = line[len(marker):].decode("utf-8", "replace")
            return Verdict(result == "passed", result)
    if process.returncode and process.returncode < 0:
        return Verdict(False, f"failed: killed by signal {signal.Signals(-process.returncode).name}")
    return Verdict(False, "timed out" if process.returncode == -signal.SIGXCPU else "failed: no verdict")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of the Codex paper (as code_eval computes it)."""
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


class CodeEval:
    """Stands in for Hugging Face evaluate's `code_eval` metric (which lm-eval's code tasks load from a hub):
    the same compute() and results, each program run by run_program."""

    def compute(self, references: list[str], predictions: list[list[str]], k: list[int] | int = (1, 10, 100),
                num_workers: int = 4, timeout: float = TIMEOUT):
        ks = [k] if isinstance(k, int) else list(k)
        results = {}
        totals, corrects = [], []
        for task_id, (candidates, test) in enumerate(zip(predictions, references)):
            verdicts = [run_program(candidate + "\n" + test, timeout) for candidate in candidates]
            results[task_id] = [(i, {"task_id": task_id, "passed": v.passed, "result": v.result, "completion_id": i})
                                for i, v in enumerate(verdicts)]
            totals.append(len(verdicts))
            corrects.append(sum(v.passed for v in verdicts))
        pass_at_k = {f"pass@{n}": sum(estimate_pass_at_k(t, c, n) for t, c in zip(totals, corrects)) / len(totals)
                     for n in ks if all(t >= n for t in totals)}
        return pass_at_k, results
