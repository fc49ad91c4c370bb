"""The embedded backend: evaluations as `flageval runner` child processes on this machine.

Everything lives under one state directory, so that a restarted `flageval serve` loses nothing:

    <state>/lock                                   one server per state directory
    <state>/cache/                                 response cache shared by every run (per service URL + model)
    <state>/evaluations/<request_id>/state.json    the request (without keys) and each task's status
    <state>/evaluations/<request_id>/api_keys.json eval_model → api_key, mode 0600
    <state>/evaluations/<request_id>/results/<eval_model>/<dataset>/   the runner's output (journal, result)
    <state>/evaluations/<request_id>/logs/<eval_model>.<dataset>.log   the runner's stdout and stderr

A task is one (service, dataset) run. Up to `parallel_datasets` tasks of one service and `max_runs`
tasks in all run at once; the rest wait in request order. Stop sends SIGTERM (the runner flushes its
journal and exits 143); resume and a restart launch the runner again and it continues from its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flageval.api import DatasetResult, EvalInfo, Progress, Status
from flageval.api.evaluation import ServingSummary
from flageval.api.rest import EvaluationRequest
from flageval.api.results import overall_status, pack_verdicts, sample_verdicts
from flageval.backends.base import (
    BackendError,
    DatasetView,
    EvaluationView,
    ServiceView,
    UnknownRequest,
    new_request_id,
    valid_request_id,
)
from flageval.baseline import Candidate, choose_baseline
from flageval.datasets import default_data_dir
from flageval.results import (
    RunPaths,
    read_progress,
    read_result,
    read_samples,
    run_paths,
)
from flageval.runner import EXIT_CONFIG, EXIT_TERMINATED
from flageval.verdict import DEFAULT_TOLERANCE, release_verdict

log = logging.getLogger("flageval.backends.local")

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class LocalSettings:
    state_dir: Path
    data_dir: Path | None = None
    parallel_datasets: int = 2  # tasks of one service at once
    max_runs: int = 4  # tasks at once on this machine
    limit: int | None = None  # cap on samples per dataset for every evaluation (smoke deployments)
    cache: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    max_crashes: int = 3  # a task whose runner died this often (not stopped, no result) is F
    grace_seconds: float = 30.0  # SIGTERM → SIGKILL
    python: str = sys.executable
    runner_env: dict[str, str] = field(default_factory=dict)


class Task(BaseModel):
    """One (service, dataset) run as state.json keeps it."""

    eval_model: str
    dataset: str
    status: Status = Status.PENDING
    attempts: int = 0
    message: str = ""
    pid: int | None = None
    accuracy: float | None = None
    done: int = 0
    total: int = 0
    crashes: int = 0
    serving: ServingSummary | None = None
    verdicts: str | None = None  # packed per-sample verdicts of the finished run, to pair it with a baseline
    stopping: bool = Field(default=False, exclude=True)  # SIGTERM sent by stop; not kept across servers

    @property
    def key(self) -> str:
        return f"{self.eval_model}/{self.dataset}"


class LocalEvaluation(BaseModel):
    """One request as <state>/evaluations/<request_id>/state.json keeps it."""

    request_id: str
    created: float
    request: dict[str, Any]  # EvaluationRequest without api keys
    datasets: list[str]
    limit: int | None = None
    tasks: list[Task]
    suspended: bool = False

    def infos(self) -> list[dict[str, Any]]:
        return self.request["eval_infos"]

    @functools.cached_property
    def parsed_infos(self) -> list[EvalInfo]:
        return [EvalInfo.model_validate(raw) for raw in self.infos()]

    def task(self, key: str) -> Task:
        return next(t for t in self.tasks if t.key == key)

    @property
    def finished(self) -> bool:
        return all(t.status.finished for t in self.tasks)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _pdeathsig() -> Any:
    """A child that outlives a killed server would race its replacement's runner on one journal:
    the kernel sends it SIGTERM when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_pdeathsig if sys.platform.startswith("linux") else None


_PREEXEC = _pdeathsig()


def _pid_alive(pid: int, marker: str) -> bool:
    """The process exists and is a runner of ours (its command line names our results directory)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return marker in cmdline and "runner" in cmdline


@dataclass
class _Runner:
    """One running `flageval runner` process and the task that waits for it."""

    proc: asyncio.subprocess.Process
    watcher: asyncio.Task


class LocalBackend:
    name = "local"

    def __init__(self, settings: LocalSettings):
        self.settings = settings
        self.data_dir = Path(settings.data_dir) if settings.data_dir is not None else default_data_dir()
        self.root = Path(settings.state_dir)
        self.evaluations: dict[str, LocalEvaluation] = {}
        self.runners: dict[tuple[str, str], _Runner] = {}  # (request_id, task key) → its runner, until it exits
        self._watchers: set[asyncio.Task] = set()  # until each has taken its runner's result too
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task | None = None
        self._closing = False
        self._lock_fd: int | None = None
        self._progress_cache: dict[tuple[str, str], tuple[str, int, Progress | None]] = {}
        self._paths: dict[tuple[str, str], RunPaths] = {}

    # -- paths ------------------------------------------------------------------------------------

    def _dir(self, request_id: str) -> Path:
        return self.root / "evaluations" / request_id

    def results_dir(self, request_id: str, eval_model: str) -> Path:
        return self._dir(request_id) / "results" / eval_model

    def _run_paths(self, request_id: str, task: Task) -> RunPaths:
        key = (request_id, task.key)
        paths = self._paths.get(key)
        if paths is None:
            paths = self._paths[key] = run_paths(self.results_dir(request_id, task.eval_model), task.dataset)
        return paths

    def _log_path(self, request_id: str, task: Task) -> Path:
        return self._dir(request_id) / "logs" / f"{task.eval_model}.{task.dataset}.log"

    def _save(self, evaluation: LocalEvaluation) -> None:
        _write_atomic(self._dir(evaluation.request_id) / "state.json", evaluation.model_dump_json(indent=1) + "\n")

    def _keys(self, request_id: str) -> dict[str, str]:
        try:
            return json.loads((self._dir(request_id) / "api_keys.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Take the state directory, reload every evaluation and continue what was running."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "evaluations").mkdir(exist_ok=True)
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise BackendError(f"another flageval serve uses the state directory {self.root}") from None
        loaded = []
        for path in (self.root / "evaluations").glob("*/state.json"):
            try:
                loaded.append(LocalEvaluation.model_validate_json(path.read_text()))
            except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                log.error("skipping unreadable %s: %s", path, exc)
        for evaluation in sorted(loaded, key=lambda e: e.created):
            self.evaluations[evaluation.request_id] = evaluation
            await self._recover(evaluation)
        self._scheduler = asyncio.create_task(self._schedule_loop())
        self._wake.set()

    async def _recover(self, evaluation: LocalEvaluation) -> None:
        """Tasks that were running when the last server stopped: wait for a stray runner to exit, then
        take its result if it finished, else queue the task again (it resumes from its journal)."""
        changed = False
        for task in evaluation.tasks:
            if task.status != Status.RUNNING:
                continue
            if task.pid:
                await self._wait_stray(task.pid, str(self.results_dir(evaluation.request_id, task.eval_model)))
            task.pid = None
            if not self._take_result(evaluation, task):
                task.status = Status.CANCELLED if evaluation.suspended else Status.PENDING
            changed = True
        if changed:
            self._save(evaluation)

    async def _wait_stray(self, pid: int, marker: str) -> None:
        if not _pid_alive(pid, marker):
            return
        log.warning("runner %d of the previous server is still running; stopping it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_seconds
        while time.monotonic() < deadline and _pid_alive(pid, marker):
            await asyncio.sleep(0.1)
        if _pid_alive(pid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def aclose(self) -> None:
        """Stop the runners (they flush their journals) but keep their tasks running on disk: the next
        server continues them."""
        if self._closing:
            return
        self._closing = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for runner in list(self.runners.values()):
            with contextlib.suppress(ProcessLookupError):
                runner.proc.send_signal(signal.SIGTERM)
        if self._watchers:
            _, pending = await asyncio.wait(list(self._watchers), timeout=self.settings.grace_seconds)
            for runner in list(self.runners.values()):
                with contextlib.suppress(ProcessLookupError):
                    runner.proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for evaluation in self.evaluations.values():
            self._save(evaluation)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the API ----------------------------------------------------------------------------------

    async def start(self, request: EvaluationRequest, datasets: list[str]) -> EvaluationView:
        request_id = new_request_id()
        while self._dir(request_id).exists():
            request_id = new_request_id()
        limits = [x for x in (request.limit, self.settings.limit) if x is not None]
        body = request.model_dump(mode="json", exclude={"eval_infos": {"__all__": {"api_key"}}})
        evaluation = LocalEvaluation(
            request_id=request_id,
            created=time.time(),
            request=body,
            datasets=datasets,
            limit=min(limits) if limits else None,
            tasks=[Task(eval_model=info.eval_model, dataset=ds) for info in request.eval_infos for ds in datasets],
        )
        directory = self._dir(request_id)
        directory.mkdir(parents=True, mode=0o700)
        (directory / "logs").mkdir()
        keys = {info.eval_model: info.api_key for info in request.eval_infos}
        _write_atomic(directory / "api_keys.json", json.dumps(keys), mode=0o600)
        self._save(evaluation)
        self.evaluations[request_id] = evaluation
        log.info("evaluation %s: %d service(s) × %s", request_id, len(request.eval_infos), ",".join(datasets))
        self._wake.set()
        return self._view(evaluation)

    def _get(self, request_id: str) -> LocalEvaluation:
        evaluation = self.evaluations.get(request_id) if valid_request_id(request_id) else None
        if evaluation is None:
            raise UnknownRequest(request_id)
        return evaluation

    async def stop(self, request_id: str) -> str:
        evaluation = self._get(request_id)
        if evaluation.finished:
            raise BackendError(f"evaluation {request_id} has already finished ({self._view(evaluation).status.value}); nothing to stop")
        if evaluation.suspended:
            return f"evaluation {request_id} is already stopped"
        evaluation.suspended = True
        ending = []
        for task in evaluation.tasks:
            if task.status == Status.PENDING:
                task.status = Status.CANCELLED
            elif task.status == Status.RUNNING:
                runner = self.runners.get((request_id, task.key))
                if runner is not None and runner.proc.returncode is None:
                    task.stopping = True
                    with contextlib.suppress(ProcessLookupError):
                        runner.proc.send_signal(signal.SIGTERM)
                    asyncio.get_running_loop().call_later(self.settings.grace_seconds, self._kill_if_running, runner.proc)
                    ending.append(runner.watcher)
        self._save(evaluation)
        # Answer once the runners have journaled and exited (SIGKILL after the grace period): from then on
        # nothing of a stopped evaluation moves.
        if ending:
            await asyncio.wait(ending, timeout=self.settings.grace_seconds + 5)
        log.info("evaluation %s: stopped (%d runner(s) signalled)", request_id, len(ending))
        return f"evaluation {request_id} stopped; finished samples are kept and resume continues from them"

    @staticmethod
    def _kill_if_running(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def resume(self, request_id: str) -> str:
        evaluation = self._get(request_id)
        again = [t for t in evaluation.tasks if t.status in (Status.CANCELLED, Status.OUT_OF_RETRIES)]
        if not evaluation.suspended and not again:
            if evaluation.finished:
                raise BackendError(f"evaluation {request_id} has already finished ({self._view(evaluation).status.value}); nothing to resume")
            return f"evaluation {request_id} is already running"
        evaluation.suspended = False
        for task in again:
            task.status = Status.PENDING
            task.message = ""
        self._save(evaluation)
        self._wake.set()
        log.info("evaluation %s: resumed (%d dataset run(s) queued)", request_id, len(again))
        return f"evaluation {request_id} resumed; {len(again)} dataset run(s) continue from their last finished sample"

    async def view(self, request_id: str) -> EvaluationView:
        return self._view(self._get(request_id))

    async def report_dirs(self, request_id: str) -> list[Path]:
        evaluation = self._get(request_id)
        dirs = [self.results_dir(request_id, info.eval_model) for info in evaluation.parsed_infos]
        return [d for d in dirs if d.is_dir()]

    def list_ids(self) -> list[str]:
        return list(self.evaluations)

    # -- views ------------------------------------------------------------------------------------

    def _progress(self, request_id: str, task: Task) -> Progress | None:
        """progress.json, read again only when it changed (clients poll far more often than it does)."""
        key = (request_id, task.key)
        cached = self._progress_cache.get(key)
        path = cached[0] if cached else str(self._run_paths(request_id, task).progress)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        if cached is not None and cached[1] == mtime:
            return cached[2]
        progress = read_progress(self._run_paths(request_id, task))
        self._progress_cache[key] = (path, mtime, progress)
        return progress

    def _dataset_view(self, evaluation: LocalEvaluation, task: Task) -> DatasetView:
        done, total = task.done, task.total
        if not task.status.finished:
            progress = self._progress(evaluation.request_id, task)
            if progress is not None:
                done, total = progress.done, progress.total
        finished = task.status.finished
        return DatasetView(dataset=task.dataset, status=task.status, done=done, total=total,
                           accuracy=task.accuracy if finished else None, message=task.message,
                           serving=task.serving if finished else None, verdicts=task.verdicts if finished else None)

    def _services(self, evaluation: LocalEvaluation) -> list[ServiceView]:
        services = []
        for info in evaluation.parsed_infos:
            datasets = [self._dataset_view(evaluation, t) for t in evaluation.tasks if t.eval_model == info.eval_model]
            services.append(ServiceView(eval_model=info.eval_model, chip=info.chip, baseline_key=info.baseline_key, datasets=datasets))
        return services

    @staticmethod
    def _candidates(evaluation: LocalEvaluation, *, baselines_only: bool = False) -> list[Candidate[LocalEvaluation]]:
        return [Candidate(evaluation.request_id, info.eval_model, info.baseline_key, created=evaluation.created, ref=evaluation,
                          succeeded=overall_status([t.status for t in evaluation.tasks if t.eval_model == info.eval_model]) == Status.SUCCESS)
                for info in evaluation.parsed_infos if info.is_baseline or not baselines_only]

    @staticmethod
    def _results(evaluation: LocalEvaluation, eval_model: str) -> list[DatasetResult]:
        return [DatasetResult(dataset=t.dataset, status=t.status, accuracy=t.accuracy if t.status.finished else None)
                for t in evaluation.tasks if t.eval_model == eval_model]

    def _view(self, evaluation: LocalEvaluation) -> EvaluationView:
        services = self._services(evaluation)
        mine = self._candidates(evaluation)
        theirs = [c for other in self.evaluations.values() if other is not evaluation for c in self._candidates(other, baselines_only=True)]
        for service, candidate in zip(services, mine):
            results = self._results(evaluation, service.eval_model)
            base = choose_baseline(candidate, mine, theirs)
            reference = None if base is candidate else self._results(base.ref, base.eval_model) if base else []
            comparisons, service.release = release_verdict(results, reference, tolerance=self.settings.tolerance)
            for dataset, comparison in zip(service.datasets, comparisons):
                dataset.base_accuracy, dataset.diff = comparison.base_accuracy, comparison.diff
        return EvaluationView(request_id=evaluation.request_id, domain=evaluation.request.get("domain", "NLP"), services=services,
                              suspended=evaluation.suspended, created=evaluation.created)

    # -- scheduling -------------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._fill()
            except Exception:  # one bad launch must not stop every later one
                log.exception("scheduling failed")

    async def _fill(self) -> None:
        running = len(self.runners)
        for evaluation in self.evaluations.values():  # in creation order: earlier evaluations first
            if evaluation.suspended:
                continue
            for raw in evaluation.infos():
                name = raw["eval_model"]
                tasks = [t for t in evaluation.tasks if t.eval_model == name]
                active = sum(t.status == Status.RUNNING for t in tasks)
                for task in tasks:
                    if evaluation.suspended:  # stopped while this pass was launching its runs
                        break
                    if task.status != Status.PENDING:
                        continue
                    if running >= self.settings.max_runs:
                        return
                    if active >= self.settings.parallel_datasets:
                        break
                    await self._launch(evaluation, task)
                    running += 1
                    active += 1

    async def _launch(self, evaluation: LocalEvaluation, task: Task) -> None:
        paths = self._run_paths(evaluation.request_id, task)
        with contextlib.suppress(FileNotFoundError):
            paths.result.unlink()  # an earlier attempt's; this run writes its own
        raw = next(i for i in evaluation.infos() if i["eval_model"] == task.eval_model)
        command = [self.settings.python, "-m", "flageval.cli", "runner", "--dataset", task.dataset,
                   "--output", str(self.results_dir(evaluation.request_id, task.eval_model))]
        if evaluation.limit is not None:
            command += ["--limit", str(evaluation.limit)]
        if self.settings.cache:
            command += ["--cache-dir", str(self.root / "cache")]
        if self.settings.data_dir is not None:
            command += ["--data-dir", str(self.settings.data_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAGEVAL_SHIM_", "FLAGEVAL_TASK_RESULT"))}
        env.update(self.settings.runner_env)
        env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["FLAGEVAL_EVAL_INFO"] = json.dumps(raw)
        env["FLAGEVAL_API_KEY"] = self._keys(evaluation.request_id).get(task.eval_model, "EMPTY")
        out = self._open_log(evaluation, task)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_PREEXEC,
            )
        except OSError as exc:
            task.status, task.message = Status.FAILURE, f"cannot start the runner: {exc}"
            self._save(evaluation)
            return
        finally:
            os.close(out)
        task.status, task.pid, task.stopping = Status.RUNNING, proc.pid, False
        task.attempts += 1
        task.message = ""
        self._save(evaluation)
        log.info("evaluation %s: %s started (pid %d, attempt %d)", evaluation.request_id, task.key, proc.pid, task.attempts)
        runner = self.runners[(evaluation.request_id, task.key)] = _Runner(proc, asyncio.create_task(self._watch(evaluation, task, proc)))
        self._watchers.add(runner.watcher)
        runner.watcher.add_done_callback(self._watchers.discard)
        if evaluation.suspended:  # stopped while the process was being started
            task.stopping = True
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def _open_log(self, evaluation: LocalEvaluation, task: Task) -> int:
        """The runner's log, appended to across attempts; a file descriptor the child inherits."""
        path = self._log_path(evaluation.request_id, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"--- attempt {task.attempts + 1} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        return fd

    async def _watch(self, evaluation: LocalEvaluation, task: Task, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if (runner := self.runners.get((evaluation.request_id, task.key))) is not None and runner.proc is proc:
            del self.runners[(evaluation.request_id, task.key)]
        if self._closing and not task.stopping:
            return  # stays R on disk: the next server continues it
        task.pid = None
        terminated = code in (EXIT_TERMINATED, -signal.SIGTERM)
        if self._take_result(evaluation, task):
            pass
        elif terminated and task.stopping:
            task.status = Status.CANCELLED if evaluation.suspended else Status.PENDING  # resumed while it was stopping
        elif code == EXIT_CONFIG:
            task.status, task.message = Status.FAILURE, self._log_error(evaluation, task) or "configuration error (runner exit code 2)"
        else:
            task.crashes += 1
            if task.crashes < self.settings.max_crashes:
                log.warning("evaluation %s: %s runner exited with %s; trying again", evaluation.request_id, task.key, code)
                task.status = Status.PENDING
            else:
                task.status = Status.FAILURE
                task.message = f"runner exited with code {code} ({task.crashes} times); log: {self._log_path(evaluation.request_id, task)}"
        task.stopping = False
        log.info("evaluation %s: %s → %s (exit %s)", evaluation.request_id, task.key, task.status.value, code)
        self._save(evaluation)
        self._wake.set()

    def _take_result(self, evaluation: LocalEvaluation, task: Task) -> bool:
        result = read_result(self._run_paths(evaluation.request_id, task))
        if result is None:
            return False
        task.status, task.accuracy, task.message = result.status, result.accuracy, result.message
        task.done, task.total = result.n_done, result.n_samples
        task.serving = ServingSummary.of(result.serving)
        paths = self._run_paths(evaluation.request_id, task)
        task.verdicts = pack_verdicts(sample_verdicts(read_samples(paths), result.n_samples)) if paths.samples.exists() else None
        return True

    def _log_error(self, evaluation: LocalEvaluation, task: Task) -> str:
        try:
            lines = self._log_path(evaluation.request_id, task).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines[-50:]):
            if line.startswith("error:") or "error:" in line[:40]:
                return line.split("error:", 1)[1].strip()
        return ""
