"""Fixtures: `flageval serve` subprocesses, stopped at the end of each test."""

from __future__ import annotations

from pathlib import Path

import pytest
from shim_process import ShimProcess, launch_shim


@pytest.fixture
def start_shim(tmp_path):
    started: list[ShimProcess] = []

    def start(*args: str, state_dir: Path | None = None, env: dict[str, str] | None = None) -> ShimProcess:
        state = state_dir or tmp_path / "state"
        shim = launch_shim(state, tmp_path / f"serve-{len(started)}.log", *args, env=env)
        started.append(shim)
        return shim

    yield start
    for shim in started:
        shim.stop()
