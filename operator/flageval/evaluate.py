"""`flageval eval`: every dataset of one service, in this process, with a progress bar and a verdict."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from flageval.api import DatasetResult, EvalInfo, SampleRecord, Status
from flageval.api import Progress as ProgressEvent
from flageval.datasets import DATASETS, DatasetError, is_dataset, suites
from flageval.engine.probe import probe
from flageval.results import list_results, read_samples, run_paths
from flageval.runner import RunRequest, endpoint_for, run
from flageval.verdict import (
    DEFAULT_TOLERANCE,
    DatasetComparison,
    paired_test,
    release_verdict,
)


class BarReporter:
    """Feeds one rich progress task per dataset."""

    def __init__(self, bars: Progress, dataset: str):
        self.bars = bars
        self.task = bars.add_task(dataset, total=None, failed=0, rate=0.0)

    def progress(self, event: ProgressEvent) -> None:
        self.bars.update(self.task, completed=event.done, total=event.total, failed=event.failed, rate=event.rate)

    def finished(self, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
        self.bars.update(self.task, description=f"{result.dataset} [{result.status.value}]")


def _eval_info(args: argparse.Namespace) -> EvalInfo:
    fields = {
        "eval_model": args.eval_model or args.model,
        "model": args.model,
        "eval_url": args.url,
        "tokenizer": args.tokenizer,
        "api_key": args.api_key,
        "batch_size": args.batch_size,
        "num_concurrent": args.num_concurrent,
        "num_retry": args.num_retry,
        "gen_kwargs": args.gen_kwargs,
        "thinking": args.thinking,
        "retry_time": args.retry_time,
    }
    if args.chip:
        fields["chip"] = args.chip
    return EvalInfo(**fields)


def _paired(results: list[DatasetResult], output: Path, baseline: Path) -> dict:
    tests = {}
    for result in results:
        mine = list(read_samples(run_paths(output, result.dataset)))
        theirs = list(read_samples(run_paths(baseline, result.dataset)))
        metric = _headline_metric(mine)
        tests[result.dataset] = paired_test(theirs, mine, metric) if metric else None
    return tests


def _headline_metric(records) -> str | None:
    """The per-sample score the dataset's accuracy averages (its first score key)."""
    for record in records:
        if record.scores:
            return next(iter(record.scores))
    return None


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _table(info: EvalInfo, verdicts: list[DatasetComparison], release: bool, has_baseline: bool) -> Table:
    table = Table(
        title=f"{info.eval_model} ({info.chip}) — release: {'YES' if release else 'NO'}",
        caption="p: exact McNemar on paired samples (— for scores on a scale); 95% CI: paired bootstrap of the diff"
        if has_baseline else None,
    )
    for column in ("dataset", "status", "accuracy", "baseline", "diff", "p", "95% CI", "verdict"):
        table.add_column(column, no_wrap=True)
    for v in verdicts:
        p = v.paired
        table.add_row(
            v.dataset,
            v.status.value,
            _fmt(v.accuracy),
            _fmt(v.base_accuracy) if has_baseline else "—",
            _fmt(v.diff, signed=True) if has_baseline else "—",
            f"{p.p_value:.3g}" if p and p.p_value is not None else "—",
            f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]" if p else "—",
            ("ok" if v.within_tolerance else "differs" if v.diff is not None else "no baseline") if has_baseline else "",
        )
    return table


def serving_table(results: list[DatasetResult], title: str) -> Table:
    """The serving figures of each dataset's run (`--details`)."""
    table = Table(title=title, caption="latency of the attempt that answered; tokens from the service's usage")
    for column in ("dataset", "requests", "p50 ms", "p90 ms", "p99 ms", "tokens/req", "tokens/s", "cut by length",
                   "errors", "retries", "note"):
        table.add_column(column, no_wrap=column != "note")
    for r in results:
        s = r.serving
        if s is None:
            table.add_row(r.dataset, *["—"] * 9, "no serving figures")
            continue
        kinds = lambda counts: ", ".join(f"{k} {v}" for k, v in counts.items()) or "0"
        table.add_row(r.dataset, str(s.requests), _fmt1(s.latency_p50_ms), _fmt1(s.latency_p90_ms), _fmt1(s.latency_p99_ms),
                      _fmt1(s.output_tokens_per_request), _fmt1(s.output_tokens_per_second),
                      "—" if s.truncated_percent is None else f"{s.truncated} ({s.truncated_percent:.1f}%)",
                      kinds(s.errors), kinds(s.retries), s.note)
    return table


def _fmt1(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _json(info: EvalInfo, results: list[DatasetResult], verdicts: list[DatasetComparison], release: bool) -> dict:
    by_name = {r.dataset: r for r in results}
    details = []
    for v in verdicts:
        r = by_name[v.dataset]
        details.append(
            {
                "dataset": v.dataset,
                "status": v.status.value,
                "accuracy": v.accuracy,
                "base_accuracy": v.base_accuracy,
                "diff": v.diff,
                "p_value": v.paired.p_value if v.paired else None,
                "diff_ci": [v.paired.ci_low, v.paired.ci_high] if v.paired else None,
                "progress": r.progress,
                "metrics": r.metrics,
                "n_failed": r.n_failed,
                "message": r.message,
                "serving": r.serving.model_dump() if r.serving is not None else None,
            }
        )
    overall = Status.SUCCESS if all(r.status == Status.SUCCESS for r in results) else next(
        r.status for r in results if r.status != Status.SUCCESS
    )
    return {"eval_model": info.eval_model, "chip": info.chip, "status": overall.value, "release": release, "details": details}


def _dataset_names(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """(datasets to run, the mode each is run in): --datasets, else the NLP suite --mode names (built in or
    from --suites); a --mode that is no suite is a dataset mode (mmlu's generative or loglikelihood)."""
    named = suites("NLP", args.suites)
    is_suite = args.mode in named
    if args.datasets:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    else:
        names = list(named[args.mode if is_suite else "default"])
    return names, None if is_suite else args.mode


def _known(name: str, include_paths: Sequence[Path]) -> bool:
    # with include paths, a name not found may be in a file that could not be read: its run says which
    return bool(include_paths) or is_dataset(name)


async def evaluate_locally(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)  # one error, one line

    def fail(message: str) -> int:
        err.print(f"flageval: error: {message}", markup=False, highlight=False)
        return 2

    try:
        names, dataset_mode = _dataset_names(args)
    except DatasetError as exc:  # a suites file that cannot be read
        return fail(str(exc))
    unknown = [n for n in names if not _known(n, args.include_path)]
    if not names or unknown:
        return fail(f"unknown dataset {', '.join(unknown) or '(none given)'}: neither one of "
                    f"{', '.join(sorted(DATASETS))} nor an lm-evaluation-harness task, group or tag")
    if args.limit is not None and args.limit < 1:
        return fail("--limit must be a positive number of samples")
    if args.baseline is not None and not list_results(args.baseline):
        return fail(f"--baseline {args.baseline} holds no results (expected <dir>/<dataset>/result.json)")
    from pydantic import ValidationError

    from flageval.api import format_validation_error

    try:
        info = _eval_info(args)
    except ValidationError as exc:
        return fail(format_validation_error(exc))
    from flageval.api.urlpolicy import UrlPolicy, check_url

    try:
        refusal = await check_url(info.eval_url, UrlPolicy.from_env())
    except ValueError as exc:
        return fail(str(exc))
    if refusal:  # this machine's own user chose the URL: warn, as the operator and REST API would refuse it
        err.print(f"flageval: warning: eval_url {info.eval_url}: {refusal} (the operator and the REST API refuse it; "
                  "this run goes on)", markup=False, highlight=False)
    problem = await probe(endpoint_for(info))
    if problem:
        return fail(problem)

    output = args.output or Path(".flageval") / info.eval_model
    bars = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeRemainingColumn(),
        console=err,
        disable=args.json and not err.is_terminal,
    )
    results = []
    with bars:
        for name in names:
            request = RunRequest(
                info,
                name,
                output,
                limit=args.limit,
                mode=dataset_mode,
                data_dir=args.data_dir,
                cache_dir=None if args.no_cache else args.cache_dir,
                include_paths=tuple(args.include_path),
                allow_code_execution=args.allow_code_execution,
            )
            results.append(await run(request, BarReporter(bars, name)))

    config_errors = [r for r in results if r.status == Status.FAILURE]
    baseline = list_results(args.baseline) if args.baseline else None
    paired = _paired(results, output, args.baseline) if args.baseline else None
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    verdicts, release = release_verdict(results, baseline, tolerance=tolerance, paired=paired)

    if args.json:
        print(json.dumps(_json(info, results, verdicts, release), indent=2))
    else:
        out = Console(width=None if sys.stdout.isatty() else 120)  # piped output: don't squeeze to 80
        out.print(_table(info, verdicts, release, baseline is not None))
        if args.details:
            out.print(serving_table(results, f"{info.eval_model} — serving"))
        for r in results:
            if r.message:
                out.print(f"{r.dataset}: {r.message}", markup=False, highlight=False)
        out.print(f"results in {output}", markup=False, highlight=False)
    if config_errors and len(config_errors) == len(results):
        for r in config_errors:
            err.print(f"flageval: error: {r.message}", markup=False, highlight=False)
    return 0 if all(r.status == Status.SUCCESS for r in results) else 1
