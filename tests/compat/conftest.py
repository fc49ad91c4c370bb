"""Fixtures: `flageval serve` subprocesses, stopped at the end of each test (their logs shown when it failed),
and, for the Kubernetes backend, the operator's fixtures (CRDs, `start_operator`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from shim_process import ShimProcess, launch_shim

_spec = importlib.util.spec_from_file_location("operator_test_fixtures", Path(__file__).resolve().parents[1] / "operator" / "conftest.py")
_fixtures = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_fixtures)
crds, start_operator = _fixtures.crds, _fixtures.start_operator


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def start_shim(tmp_path, request):
    started: list[ShimProcess] = []

    def start(*args: str, state_dir: Path | None = None, env: dict[str, str] | None = None) -> ShimProcess:
        state = state_dir or tmp_path / "state"
        shim = launch_shim(state, tmp_path / f"serve-{len(started)}.log", *args, env=env)
        started.append(shim)
        return shim

    yield start
    for shim in started:
        shim.stop()
    if request.node.stash.get(FAILED, False):
        for number, shim in enumerate(started):
            print(f"--- flageval serve #{number} ({shim.log_path}), last lines:\n" + "\n".join(shim.log().splitlines()[-40:]))
