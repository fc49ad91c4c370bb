"""MathVision's answer comparison (FlagEvalMM's evaluate.py is_equal, eval_tuple): the quick cases in
this process, the numeric ones through latex2sympy in a child process with a deadline.

MathVision's `is_equal` evaluates `round(eval(str(latex2sympy(x))), 2)` on model output. Both steps can
take unbounded time and memory on odd answers ("10^{10^{10}}" is a valid number), so they run in a
long-lived child process: one that overruns the deadline is killed (and started again on the next
call), and the comparison counts as failed — what an exception means in FlagEvalMM. `eval` there sees
no builtins, and sympy output carrying names with "__" or quotes is refused: an answer is data.

Run as `python -m flageval.datasets.latex_eval`, the module is that child: one JSON line
`[kind, a, b]` in, one line out ("1", "0", or "!" + error).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

DEFAULT_TIMEOUT = 5.0
STARTUP_TIMEOUT = 120.0
_CACHE_SIZE = 4096
_UNSAFE = ("__", "'", '"', "\\", "lambda", ":")

NumberOf = Callable[[str], object]  # an answer's numeric value, or an exception


def latex_number(expr: str) -> object:
    """round(eval(str(latex2sympy(expr))), 2): a number, or an exception (FlagEvalMM catches them all)."""
    from latex2sympy2 import latex2sympy

    text = str(latex2sympy(expr))
    if any(token in text for token in _UNSAFE):
        raise ValueError(f"refusing to evaluate {text[:80]!r}")
    return round(eval(text, {"__builtins__": {}}, {}), 2)


def _serve() -> int:
    """The child: compares pairs until stdin closes."""
    try:
        import latex2sympy2  # noqa: F401 - imported before "ready": its second of start-up is not a comparison's time

    except Exception as exc:  # noqa: BLE001 - reported to the parent, which falls back
        print(f"!{type(exc).__name__}: {exc}", flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            kind, a, b = json.loads(line)
            if kind != "is_equal":
                raise ValueError(f"unknown request {kind!r}")
            answer = "1" if is_equal_exact(a, b, latex_number) else "0"
        except Exception as exc:  # noqa: BLE001 - a bad request must not end the child
            answer = "!" + f"{type(exc).__name__}: {exc}".replace("\n", " ")
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    return 0


class LatexComparer:
    """The parent side: `equal(a, b)` → (verdict, note). note says when the deadline or a crash decided.

    Thread-safe (one request at a time); results are cached. When no child can be started, the
    comparison runs in this process without a deadline."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, python: str | None = None) -> None:
        self.timeout = timeout
        self.python = python or sys.executable
        self.timeouts = 0
        self.crashes = 0
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], tuple[bool, str | None]] = OrderedDict()
        self._inline: Callable[[str, str], bool] | None = None
        atexit.register(self.close)

    def equal(self, a: str, b: str) -> tuple[bool, str | None]:
        key = (a, b)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            result = self._ask(a, b)
            if result[1] is None or "died" not in result[1]:
                self._cache[key] = result
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            return result

    def _start(self) -> subprocess.Popen[bytes] | None:
        if self._process is not None and self._process.poll() is None:
            return self._process
        if self._inline is not None:
            return None
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            process = subprocess.Popen([self.python, "-m", "flageval.datasets.latex_eval"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        except OSError:
            return self._fall_back()
        self.starts += 1
        line = self._read_line(process, STARTUP_TIMEOUT)
        if line != "ready":
            self._kill(process)
            return self._fall_back()
        self._process = process
        return process

    def _fall_back(self) -> None:
        self._inline = lambda a, b: is_equal_exact(a, b, latex_number)

    @staticmethod
    def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        line = process.stdout.readline()
        return line.decode("utf-8", "replace").rstrip("\n") if line else None

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        process.kill()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _ask(self, a: str, b: str) -> tuple[bool, str | None]:
        process = self._start()
        if process is None:
            assert self._inline is not None
            return self._inline(a, b), None
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(["is_equal", a, b]).encode() + b"\n")
            process.stdin.flush()
        except OSError:
            self._process = None
            self.crashes += 1
            return False, "latex comparison process died"
        line = self._read_line(process, self.timeout)
        if line is None:
            alive = process.poll() is None
            self._kill(process)
            self._process = None
            if alive:
                self.timeouts += 1
                return False, f"latex comparison timed out after {self.timeout:g} s"
            self.crashes += 1
            return False, "latex comparison process died"
        if line.startswith("!"):
            return False, "error: " + line[1:]
        return line == "1", None

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self._kill(process)


_shared: LatexComparer | None = None
_shared_lock = threading.Lock()


def shared_comparer() -> LatexComparer:
    """One child process per interpreter, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LatexComparer()
        return _shared


# ---- equality (evaluate.py is_equal, eval_tuple) --------------------------------------------------


def _tuple_values(text: str, number: NumberOf) -> str:
    """eval_tuple: "(a,b,…)" / "[a,b,…]" with each element's rounded value; on any error, unchanged."""
    elements = text[1:-1].split(",")
    try:
        brackets = text[0] + text[-1]
        if brackets in ("()", "[]") and len(elements) > 1:
            values = [sub if "infty" in sub or sub in ("a", "-a") else str(number(sub)) for sub in elements]
            return brackets[0] + ",".join(values) + brackets[1]
    except Exception:  # noqa: BLE001 - FlagEvalMM returns the string unchanged
        return text
    return text


def is_equal_exact(asw: str, gt_asw: str, number: NumberOf) -> bool:
    """is_equal with `number(x)` = round(eval(str(latex2sympy(x))), 2) (latex_number)."""
    asw, gt_asw = asw.lower(), gt_asw.lower()
    if not asw.replace(" ", "") or not gt_asw.replace(" ", ""):
        return False
    if gt_asw.strip() == asw.strip():
        return True
    asw, gt_asw = _tuple_values(asw, number), _tuple_values(gt_asw, number)
    if gt_asw == asw:
        return True
    try:
        return number(gt_asw) == number(asw)
    except BaseException:  # noqa: BLE001 - FlagEvalMM: any failure means "not equal"
        return False


Comparer = Callable[[str, str], tuple[bool, "str | None"]]


def is_equal(asw: str, gt_asw: str, comparer: Comparer | None = None) -> tuple[bool, str | None]:
    """is_equal; the quick cases here, the latex2sympy ones in the comparer (a child process with a
    deadline by default). → (verdict, note when a deadline or crash decided)."""
    low_a, low_g = asw.lower(), gt_asw.lower()
    if not low_a.replace(" ", "") or not low_g.replace(" ", ""):
        return False, None
    if low_g.strip() == low_a.strip():
        return True, None
    if comparer is None:
        comparer = shared_comparer().equal
    return comparer(asw, gt_asw)


if __name__ == "__main__":
    sys.exit(_serve())
