"""The local backend's bookkeeping with a stand-in runner whose behaviour each test scripts: crashes are
retried then F, a configuration error is F with the runner's reason, OOR resumes, caps are kept, state
survives a new backend on the same directory."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from flageval.api import Status
from flageval.api.rest import EvaluationRequest
from flageval.backends.base import BackendError, UnknownRequest
from flageval.backends.local import LocalBackend, LocalSettings

FAKE_RUNNER = '''#!{python}
import json, os, sys, time
sys.path.insert(0, {root!r})
from flageval.api import DatasetResult, Status
from flageval.results import run_paths, write_result
args = sys.argv[sys.argv.index("runner") + 1:]
dataset, output = args[args.index("--dataset") + 1], args[args.index("--output") + 1]
plan = json.loads(os.environ["FAKE_PLAN"])
journal = os.path.join(os.environ["FAKE_DIR"], "calls.jsonl")
with open(journal, "a") as f:
    f.write(json.dumps({{"dataset": dataset, "start": time.time(), "key": os.environ.get("FLAGEVAL_API_KEY"),
                        "info": json.loads(os.environ["FLAGEVAL_EVAL_INFO"])}}) + "\\n")
attempt = sum(1 for line in open(journal) if json.loads(line)["dataset"] == dataset)
steps = plan.get(dataset, ["S"])
step = steps[min(attempt, len(steps)) - 1]
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.2")))
if step == "crash":
    sys.exit(3)
if step == "config":
    print("error: the data directory has no " + dataset, file=sys.stderr)
    sys.exit(2)
status = Status(step)
write_result(run_paths(output, dataset), DatasetResult(dataset=dataset, status=status, accuracy=50.0 if step == "S" else None,
             n_samples=10, n_done=10 if step == "S" else 7, progress="10/10" if step == "S" else "7/10", message="3 of 10 samples failed" if step == "OOR" else ""))
sys.exit(0 if step == "S" else 1)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake-python"
    script.write_text(FAKE_RUNNER.format(python=sys.executable, root=str(Path(__file__).resolve().parents[2] / "operator")))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))

    def settings(plan: dict, **kw) -> LocalSettings:
        monkeypatch.setenv("FAKE_PLAN", json.dumps(plan))
        return LocalSettings(state_dir=tmp_path / "state", python=str(script), grace_seconds=5, **kw)

    def calls() -> list[dict]:
        path = tmp_path / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return settings, calls


def request(*names: str, datasets=("gsm8k", "mmlu")) -> tuple[EvaluationRequest, list[str]]:
    infos = [{"eval_model": n, "model": "m", "eval_url": "http://127.0.0.1:9/v1/chat/completions", "api_key": f"key-of-{n}"} for n in names]
    return EvaluationRequest.model_validate({"eval_infos": infos}), list(datasets)


async def finished(backend: LocalBackend, request_id: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await backend.view(request_id)
        if view.finished:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"not finished: {[(d.dataset, d.status) for d in view.datasets]}")


def test_crashes_are_retried_then_f_and_a_configuration_error_is_f_with_its_reason(fake):
    settings, calls = fake

    async def scenario():
        backend = LocalBackend(settings({"gsm8k": ["crash", "S"], "mmlu": ["config"], "other": ["crash"] * 5}, max_crashes=3))
        await backend.open()
        try:
            view = await backend.start(*request("a-nvidia-origin", datasets=("gsm8k", "mmlu", "other")))
            view = await finished(backend, view.request_id)
        finally:
            await backend.aclose()
        return view

    view = asyncio.run(scenario())
    by_name = {d.dataset: d for d in view.datasets}
    assert by_name["gsm8k"].status == Status.SUCCESS and by_name["gsm8k"].accuracy == 50.0
    assert by_name["mmlu"].status == Status.FAILURE and by_name["mmlu"].message == "the data directory has no mmlu"
    assert by_name["other"].status == Status.FAILURE and "exited with code 3 (3 times)" in by_name["other"].message
    assert view.status == Status.FAILURE
    assert sorted(c["dataset"] for c in calls()) == ["gsm8k", "gsm8k", "mmlu", "other", "other", "other"]


def test_oor_finishes_and_resume_continues_it(fake):
    settings, calls = fake

    async def scenario():
        backend = LocalBackend(settings({"gsm8k": ["OOR", "S"]}))
        await backend.open()
        try:
            rid = (await backend.start(*request("a", datasets=("gsm8k",)))).request_id
            first = await finished(backend, rid)
            message = await backend.resume(rid)
            second = await finished(backend, rid)
            with pytest.raises(BackendError, match="already finished"):
                await backend.resume(rid)
            with pytest.raises(BackendError, match="already finished"):
                await backend.stop(rid)
            with pytest.raises(UnknownRequest):
                await backend.view("eval-000000000000")
        finally:
            await backend.aclose()
        return first, message, second

    first, message, second = asyncio.run(scenario())
    assert first.status == Status.OUT_OF_RETRIES and first.datasets[0].message == "3 of 10 samples failed"
    assert first.datasets[0].progress == "7/10"
    assert "1 dataset run(s) continue" in message
    assert second.status == Status.SUCCESS and second.datasets[0].progress == "10/10"
    assert len(calls()) == 2


def test_caps_on_runs_per_service_and_in_all(fake):
    settings, calls = fake

    async def scenario():
        backend = LocalBackend(settings({}, parallel_datasets=1, max_runs=2))
        await backend.open()
        try:
            first = await backend.start(*request("a", "b"))
            second = await backend.start(*request("c"))
            peak = 0
            while not all(v.finished for v in [await backend.view(first.request_id), await backend.view(second.request_id)]):
                views = [await backend.view(first.request_id), await backend.view(second.request_id)]
                running = [(s.eval_model, d.dataset) for v in views for s in v.services for d in s.datasets if d.status == Status.RUNNING]
                peak = max(peak, len(running))
                assert len(running) <= 2 and len({name for name, _ in running}) == len(running)
                await asyncio.sleep(0.02)
        finally:
            await backend.aclose()
        return peak

    assert asyncio.run(scenario()) == 2
    # Earlier evaluations first: c's runs start after a's and b's.
    order = [c["info"]["eval_model"] for c in calls()]
    assert order.index("c") >= 2 and len(order) == 6


def test_state_and_keys_survive_a_new_backend_and_stop_holds(fake, monkeypatch):
    settings, calls = fake
    monkeypatch.setenv("FAKE_SLEEP", "30")  # runs long enough to be stopped

    async def first_server():
        backend = LocalBackend(settings({}))
        await backend.open()
        rid = (await backend.start(*request("a-nvidia-origin"))).request_id
        while len(calls()) < 2:  # both runners started
            await asyncio.sleep(0.02)
        assert all(d.status == Status.RUNNING for d in (await backend.view(rid)).datasets)
        assert "stopped" in await backend.stop(rid)
        assert "already stopped" in await backend.stop(rid)
        await backend.aclose()
        return rid

    rid = asyncio.run(first_server())
    state = Path(os.environ["FAKE_DIR"]) / "state"
    keys = state / "evaluations" / rid / "api_keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and json.loads(keys.read_text()) == {"a-nvidia-origin": "key-of-a-nvidia-origin"}
    assert "key-of" not in (state / "evaluations" / rid / "state.json").read_text()
    assert len(calls()) == 2 and all(c["key"] == "key-of-a-nvidia-origin" and "api_key" not in c["info"] for c in calls())

    monkeypatch.setenv("FAKE_SLEEP", "0.1")

    async def second_server():
        backend = LocalBackend(settings({}))
        await backend.open()
        try:
            view = await backend.view(rid)
            assert view.status == Status.CANCELLED and view.suspended  # still stopped: nothing launched
            await asyncio.sleep(0.5)
            assert len(calls()) == 2
            await backend.resume(rid)
            return await finished(backend, rid)
        finally:
            await backend.aclose()

    view = asyncio.run(second_server())
    assert view.status == Status.SUCCESS and len(calls()) == 4


def test_one_backend_per_state_directory(fake):
    settings, _ = fake

    async def scenario():
        first = LocalBackend(settings({}))
        await first.open()
        try:
            with pytest.raises(BackendError, match="another flageval serve"):
                await LocalBackend(settings({})).open()
        finally:
            await first.aclose()

    asyncio.run(scenario())
