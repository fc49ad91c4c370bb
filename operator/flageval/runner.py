"""One (service, dataset) run: dataset + engine + result store. The CLI, the local backend and each
operator Job all run this same code.

Exit codes of `flageval runner` (a Job's pod): 0 the dataset succeeded; 1 some samples failed after
every retry (OOR — Kubernetes retries the Job and the journal makes the retry resume); 2 a
configuration error (unknown dataset, missing data, bad EvalInfo — retrying cannot help); 3 when the
result could not be reported to the operator (its report was refused, or the API server stayed
unreachable; a retry of the Job resumes from the journal and reports again); 143 when stopped by
SIGTERM (suspend), after the journal is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from flageval.api import (
    DatasetResult,
    EvalInfo,
    Progress,
    SampleRecord,
    Status,
    format_validation_error,
)
from flageval.api.genkwargs import parse_gen_kwargs, to_request_fields
from flageval.api.urlpolicy import UrlPolicy, check_url
from flageval.datasets import DatasetError, default_data_dir, get_dataset
from flageval.engine import Journal, ResponseCache, run_dataset
from flageval.engine.serving import serving_figures
from flageval.engine.types import Endpoint
from flageval.results import (
    RunPaths,
    run_paths,
    write_progress,
    write_result,
    write_samples,
    write_service,
)

log = logging.getLogger("flageval.runner")

# The exit codes above; the operator\'s Job policy and the local backend read them from here.
EXIT_OK, EXIT_OOR, EXIT_CONFIG, EXIT_UNREPORTED, EXIT_TERMINATED = 0, 1, 2, 3, 143


class Reporter(Protocol):
    """Where progress and the final result go: a progress bar, a file, or a task-result object."""

    def progress(self, progress: Progress) -> None: ...

    def finished(self, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
        """The run's end; records: every sample's record, when the run got that far. Raises when the
        result could not be delivered (the run has then not succeeded)."""


class NullReporter:
    def progress(self, progress: Progress) -> None:
        pass

    def finished(self, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
        pass


class ProgressFileReporter:
    """Keeps <run dir>/progress.json current (at most once a second), then passes events on.
    Whoever can read the results directory can follow a run: the local backend does."""

    def __init__(self, paths: RunPaths, then: Reporter, interval: float = 1.0):
        self.paths, self.then, self.interval = paths, then, interval
        self._last = 0.0

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval or progress.done + progress.failed >= progress.total:
            self._last = now
            write_progress(self.paths, progress)
        self.then.progress(progress)

    def finished(self, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
        self.then.finished(result, records)


@dataclass
class RunRequest:
    eval_info: EvalInfo
    dataset: str
    output: Path  # this service's directory: <output>/<dataset>/…
    limit: int | None = None
    mode: str | None = None
    data_dir: Path | None = None
    cache_dir: Path | None = None  # None: no response cache
    url_policy: UrlPolicy | None = None  # eval_url and every address connected to are checked (None: no check)
    include_paths: tuple[Path, ...] = ()  # folders of the user's own lm-eval task YAML
    allow_code_execution: bool = False  # code tasks (humaneval) run the model's programs in a sandbox
    engine_options: dict = field(default_factory=dict)  # test hooks: backoff settings, client


def endpoint_for(info: EvalInfo, url_policy: UrlPolicy | None = None) -> Endpoint:
    return Endpoint(
        url=info.eval_url,
        model=info.model,
        api_key=info.api_key,
        num_concurrent=info.num_concurrent,
        batch_size=info.batch_size,
        num_retry=info.num_retry,
        retry_time=info.retry_time,
        gen_fields=to_request_fields(parse_gen_kwargs(info.gen_kwargs)),
        thinking=info.thinking,
        url_policy=url_policy,
    )


def _config_failure(dataset: str, message: str) -> DatasetResult:
    return DatasetResult(dataset=dataset, status=Status.FAILURE, message=message)


async def run(request: RunRequest, reporter: Reporter | None = None) -> DatasetResult:
    """Evaluate one dataset against one service, resuming from the journal in request.output."""
    endpoint = endpoint_for(request.eval_info, request.url_policy)
    paths = run_paths(request.output, request.dataset)
    reporter = ProgressFileReporter(paths, reporter or NullReporter())
    if request.url_policy is not None:
        refusal = await check_url(endpoint.url, request.url_policy)
        if refusal:  # a configuration error: nothing is sent; a journal there is left as it is
            result = _config_failure(request.dataset, f"eval_url {endpoint.url}: {refusal}")
            write_result(paths, result)
            reporter.finished(result)
            return result
    try:
        dataset = get_dataset(
            request.dataset,
            request.data_dir or default_data_dir(),
            limit=request.limit,
            mode=request.mode,
            kind=endpoint.kind,
            include_paths=request.include_paths,
            allow_code_execution=request.allow_code_execution,
        )
    except DatasetError as exc:
        result = _config_failure(request.dataset, str(exc))
        write_result(paths, result)
        await _finish(reporter, result)
        return result

    mismatch = _claim_run_dir(paths, request, endpoint.kind)
    if mismatch:
        result = _config_failure(request.dataset, mismatch)
        await _finish(reporter, result)  # result.json stays the earlier run's: nothing of it is lost
        return result
    total = dataset.total()
    info = request.eval_info
    write_service(request.output, {"eval_model": info.eval_model, "model": info.model, "chip": info.chip,
                                   "base_model_name": info.base_model_name, "baseline_key": info.baseline_key,
                                   "eval_url": info.eval_url})
    journal = Journal(paths.journal)
    cache = None
    if request.cache_dir is not None:
        cache = ResponseCache(request.cache_dir, endpoint.url, endpoint.model)
    try:
        summary = await run_dataset(
            endpoint,
            dataset.items(endpoint.kind),
            dataset.score,
            journal,
            cache,
            dataset=request.dataset,
            total=total,
            on_progress=reporter.progress,
            **request.engine_options,
        )
        records = journal.records()
    finally:
        journal.close()
        if cache is not None:
            cache.close()

    write_samples(paths, records)
    ok = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    metrics = dataset.aggregate(ok) if ok else {}
    if failed:
        status = Status.OUT_OF_RETRIES
        # Each error says why (attempts spent, a refusal, an unreadable image): the count needs no more.
        message = f"{len(failed)} of {total} samples failed; last error: {summary.last_error or failed[-1].error}"
    else:
        status, message = Status.SUCCESS, ""
    result = DatasetResult(
        dataset=request.dataset,
        status=status,
        accuracy=metrics.get("accuracy"),
        metrics=metrics,
        n_samples=total,
        n_done=len(records),
        n_failed=len(failed),
        progress=f"{len(records)}/{total}",
        message=message,
        serving=serving_figures(records),
    )
    write_result(paths, result)
    _write_metrics(paths)
    await _finish(reporter, result, records)
    return result


async def _finish(reporter: Reporter, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
    """reporter.finished on a thread of its own (a daemon: never waited for at exit), so a final report
    retried while the API server is away does not keep SIGTERM waiting."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if exc is None else done.set_exception(exc)

    def call() -> None:
        try:
            reporter.finished(result, records)
        except BaseException as exc:  # noqa: BLE001 — handed to the awaiting run
            outcome: BaseException | None = exc
        else:
            outcome = None
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop is gone: the run was stopped meanwhile
            pass

    threading.Thread(target=call, name="finish", daemon=True).start()
    await done


def _write_metrics(paths: RunPaths) -> None:
    """Keep the counters beside the results: a finished Job's pod is no longer there to be scraped."""
    from prometheus_client import REGISTRY, write_to_textfile

    try:
        write_to_textfile(str(paths.metrics), REGISTRY)
    except OSError as exc:
        log.warning("could not write %s: %s", paths.metrics, exc)


def serve_metrics(port: int) -> None:
    """/metrics on `port` while the run lasts; a port in use costs the endpoint, never the run."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("no /metrics on port %d: %s", port, exc)


def _claim_run_dir(paths: RunPaths, request: RunRequest, kind: str) -> str | None:
    """A journal only resumes the run that wrote it: the same service, model, dataset, limit and mode.
    Returns why this directory belongs to another run, or None (and records this run's identity)."""
    identity = {
        "eval_url": request.eval_info.eval_url,
        "model": request.eval_info.model,
        "dataset": request.dataset,
        "limit": request.limit,
        "mode": request.mode,
        "kind": kind,
    }
    if paths.run.exists():
        try:
            earlier = json.loads(paths.run.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier != identity:
            differs = ", ".join(k for k in identity if not earlier or earlier.get(k) != identity[k])
            return f"{paths.dir} holds another run ({differs} differ); choose another output directory"
        return None
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.run.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    return None


def exit_code(result: DatasetResult) -> int:
    return {Status.SUCCESS: EXIT_OK, Status.FAILURE: EXIT_CONFIG}.get(result.status, EXIT_OOR)


def _reporter_from_env() -> Reporter:
    target = os.environ.get("FLAGEVAL_TASK_RESULT", "")
    if not target:
        return NullReporter()
    from flageval.taskresult import TaskResultReporter

    namespace, _, name = target.partition("/")
    return TaskResultReporter(namespace, name)


def main(argv: list[str] | None = None) -> int:
    """`flageval runner`: the entry point of a Job's pod. The EvalInfo comes from FLAGEVAL_EVAL_INFO
    (JSON, without the key) and the key from FLAGEVAL_API_KEY (a Secret reference in the pod spec)."""
    parser = argparse.ArgumentParser(prog="flageval runner", description="Evaluate one dataset against one service.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True, type=Path, help="this service's results directory")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--mode")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--include-path", type=Path, action="append", default=[],
                        help="a folder of lm-eval task YAML files (repeatable)")
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="let code tasks run the model's programs (in a sandbox)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("FLAGEVAL_RUNNER_METRICS_PORT") or 0),
                        help="serve Prometheus /metrics (requests, latency, errors) on this port while running (0: off)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        fields = json.loads(os.environ.get("FLAGEVAL_EVAL_INFO", ""))
        fields["api_key"] = os.environ.get("FLAGEVAL_API_KEY", fields.get("api_key", "EMPTY"))
        info = EvalInfo.model_validate(fields)
    except json.JSONDecodeError as exc:
        print(f"error: FLAGEVAL_EVAL_INFO is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValidationError as exc:
        print(f"error: FLAGEVAL_EVAL_INFO: {format_validation_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG

    try:
        policy = UrlPolicy.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if args.metrics_port:
        serve_metrics(args.metrics_port)
    request = RunRequest(info, args.dataset, args.output, args.limit, args.mode, args.data_dir, args.cache_dir,
                         url_policy=policy, include_paths=tuple(args.include_path),
                         allow_code_execution=args.allow_code_execution)
    reporter = _reporter_from_env()
    return asyncio.run(_run_until_terminated(request, reporter))


async def _run_until_terminated(request: RunRequest, reporter: Reporter) -> int:
    """SIGTERM (a suspended Job's pod going away) cancels the run; the journal is flushed on the way out."""
    from flageval.taskresult import ReportError

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    if hasattr(reporter, "on_failure"):  # a report refused for good: no use evaluating further
        reporter.on_failure = lambda: loop.call_soon_threadsafe(task.cancel)
    journal = run_paths(request.output, request.dataset).journal
    try:
        result = await run(request, reporter)
    except asyncio.CancelledError:
        if getattr(reporter, "failure", None):
            log.error("stopped: %s; finished samples are in %s", reporter.failure, journal)
            return EXIT_UNREPORTED
        log.info("stopped by SIGTERM; finished samples are in %s", journal)
        return EXIT_TERMINATED
    except ReportError as exc:
        log.error("the run ended but its result was not reported: %s; it is in %s", exc, journal.parent)
        return EXIT_UNREPORTED
    log.info("%s: %s accuracy=%s %s", result.dataset, result.status.value, result.accuracy, result.message)
    return exit_code(result)
