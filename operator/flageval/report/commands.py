"""`flageval compare` and `flageval report`: read finished results directories, print or write."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flageval.report.compare import Disagreement, brief, compare_runs, load_run


def disagreement_table(found: list[Disagreement], title: str) -> Table:
    table = Table(title=title, caption="right→wrong: right on the baseline, wrong here; p: exact McNemar; "
                                       "identical: responses equal word for word")
    for column in ("dataset", "paired", "both right", "right→wrong", "wrong→right", "both wrong", "p", "95% CI of diff",
                   "identical", "same verdict, other text", "unpaired"):
        table.add_column(column, no_wrap=True)
    for d in found:
        on_scale = d.scale  # scores on a scale: how often each scored higher, no McNemar
        table.add_row(d.dataset, str(d.paired), "—" if on_scale else str(d.both_right), str(d.right_to_wrong),
                      str(d.wrong_to_right), "—" if on_scale else str(d.both_wrong),
                      "— (scores on a scale)" if on_scale else "—" if d.p_value is None else f"{d.p_value:.3g}",
                      "—" if d.diff_ci is None else f"[{d.diff_ci[0]:+.2f}, {d.diff_ci[1]:+.2f}]",
                      "—" if d.agreement_rate is None else f"{d.identical_responses} ({d.agreement_rate:.1f}%)",
                      str(d.same_verdict_different_text), str(d.unpaired))
    return table


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="flageval compare",
        description="Sample-level disagreements between a baseline run (RUN_A) and another run (RUN_B) of the same "
                    "datasets: the paired 2x2 table, the exact McNemar p-value, flipped samples, identical responses.")
    parser.add_argument("run_a", type=Path, help="the baseline's results directory (flageval eval --output)")
    parser.add_argument("run_b", type=Path, help="the other run's results directory")
    parser.add_argument("--datasets", default=None, help="comma-separated datasets (default: every one both hold)")
    parser.add_argument("--samples", type=int, default=10, help="flipped samples listed per dataset (table; --json lists all)")
    parser.add_argument("--json", action="store_true", help="one JSON object, flipped samples with prompts and responses")
    args = parser.parse_args(argv)
    try:
        a, b = load_run(args.run_a), load_run(args.run_b)
    except ValueError as exc:
        print(f"flageval: error: {exc}", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    found = compare_runs(a, b, names)
    if not found:
        print(f"flageval: error: {args.run_a} and {args.run_b} share no dataset", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"baseline": a.label, "run": b.label, "datasets": [d.as_dict() for d in found]},
                         indent=2, ensure_ascii=False))
        return 0
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(disagreement_table(found, f"{b.label} against {a.label}"))
    for d in found:
        if not d.flipped:
            continue
        shown = d.flipped[: max(0, args.samples)]
        out.print(f"\n{d.dataset}: {len(d.flipped)} flipped sample(s)" + (f", first {len(shown)}" if len(shown) < len(d.flipped) else ""),
                  markup=False, highlight=False)
        for s in shown:
            out.print(f"  {s.id}  {s.direction}  target {brief(s.target, 30)}  baseline {brief(s.baseline_extracted, 30)}"
                      f"  run {brief(s.extracted, 30)}", markup=False, highlight=False)
    return 0


def report_main(argv: list[str]) -> int:
    from flageval.report.html import load_runs, write_report
    from flageval.verdict import DEFAULT_TOLERANCE

    parser = argparse.ArgumentParser(
        prog="flageval report",
        description="One self-contained HTML page over results directories: per dataset each chip's accuracy against the "
                    "baseline (95 %% interval, tolerance band), disagreements with expandable flipped samples, latency "
                    "distributions, truncation and error rates. The baseline is the first '-nvidia-origin' run, else the first.")
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="results directories (flageval eval --output)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="where to write the page (default report.html)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="release tolerance in points (default 0.5)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        for why in load_runs(args.runs)[1]:
            print(f"flageval: warning: left out: {why}", file=sys.stderr)
        out = write_report(args.runs, args.out, tolerance=args.tolerance, title=args.title)
    except ValueError as exc:
        print(f"flageval: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"flageval: error: {exc.name or exc} is missing: pip install 'flageval-operator[report]'", file=sys.stderr)
        return 2
    print(f"report written to {out}")
    return 0
