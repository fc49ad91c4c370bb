"""`flageval` commands: eval (local, no cluster), compare and report (of finished runs), runner (inside a Job),
mock-model, operator, serve."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"flageval: error: {message}", file=sys.stderr)
    return code


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flageval eval",
        description="Evaluate an OpenAI-compatible service on benchmarks and compare it with a baseline run.",
    )
    p.add_argument("--url", required=True, help="endpoint, e.g. http://host:9010/v1/chat/completions")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--eval-model", help="run name (default: the model name)")
    p.add_argument("--chip", default=None, help="Vendor-ChipName (default Nvidia-H100)")
    p.add_argument("--tokenizer", default="")
    p.add_argument("--api-key", default=os.environ.get("FLAGEVAL_API_KEY", "EMPTY"), help="or FLAGEVAL_API_KEY")
    p.add_argument("--datasets", default=None,
                   help="comma-separated native datasets and lm-eval tasks, groups or tags (default: the --mode suite)")
    p.add_argument("--mode", default=None,
                   help="a suite ('default' = gsm8k,mmlu; 'classic'; one of --suites) or a dataset mode, e.g. mmlu "
                        "'generative' or 'loglikelihood' (default: by endpoint)")
    p.add_argument("--suites", type=Path, default=None,
                   help="a YAML file of your own suites, {NLP: {name: [datasets]}}, named by --mode "
                        "(default: FLAGEVAL_SUITES)")
    p.add_argument("--include-path", type=Path, action="append", default=[],
                   help="a folder of your own lm-eval task YAML files (repeatable)")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="let code tasks (humaneval) run the model's programs, in a sandbox")
    p.add_argument("--num-concurrent", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-retry", type=int, default=10)
    p.add_argument("--gen-kwargs", default="")
    p.add_argument("--thinking", action="store_true")
    p.add_argument("--retry-time", type=float, default=3600)
    p.add_argument("--limit", type=int, default=None, help="first N samples of each dataset")
    p.add_argument("--data-dir", type=Path, default=None, help="benchmark files (default: FLAGEVAL_DATA_DIR or ../shared/datasets)")
    p.add_argument("--output", type=Path, default=None, help="results, per-sample records and journal; the same DIR resumes")
    p.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("FLAGEVAL_CACHE_DIR", Path.home() / ".cache/flageval/responses")))
    p.add_argument("--no-cache", action="store_true", help="send every request even when a cached answer exists")
    p.add_argument("--baseline", type=Path, default=None, help="--output DIR of a baseline run to diff against")
    p.add_argument("--tolerance", type=float, default=None, help="release tolerance in points (default 0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--details", action="store_true",
                   help="also print the serving figures: latency p50/p90/p99, output tokens, truncation, errors and retries")
    return p


def cmd_eval(argv: list[str]) -> int:
    from flageval.evaluate import evaluate_locally

    args = _eval_parser().parse_args(argv)
    try:
        return asyncio.run(evaluate_locally(args))
    except KeyboardInterrupt:
        return _fail("interrupted; run again with the same --output to resume", 130)


def cmd_compare(argv: list[str]) -> int:
    from flageval.report.commands import compare_main

    return compare_main(argv)


def cmd_report(argv: list[str]) -> int:
    from flageval.report.commands import report_main

    return report_main(argv)


def cmd_runner(argv: list[str]) -> int:
    from flageval.runner import main

    return main(argv)


def cmd_mock_model(argv: list[str]) -> int:
    from flageval.mock_model.server import main

    return main(argv)


def cmd_operator(argv: list[str]) -> int:
    from flageval.controller.run import run_operator

    return run_operator(argv)


def cmd_serve(argv: list[str]) -> int:
    from flageval.shim.serve import main

    return main(argv)


COMMANDS = {
    "eval": (cmd_eval, "evaluate a service locally (no cluster)"),
    "compare": (cmd_compare, "sample-level disagreements between a baseline run and another run"),
    "report": (cmd_report, "one self-contained HTML report of runs: accuracy, disagreements, serving"),
    "runner": (cmd_runner, "run one (service, dataset) — the entry point of an operator Job"),
    "mock-model": (cmd_mock_model, "the bundled reference OpenAI-compatible model server"),
    "operator": (cmd_operator, "run the Kubernetes operator with the current kubeconfig"),
    "serve": (cmd_serve, "serve FlagEval's REST API over local runs or Evaluation objects"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: flageval COMMAND [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<12} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            return _fail(f"unknown command '{argv[0]}'")
        return 0 if argv else EXIT_USAGE
    handler, _ = COMMANDS[argv[0]]
    try:
        return handler(argv[1:])
    except ValidationError as exc:
        from flageval.api import format_validation_error

        return _fail(format_validation_error(exc))


if __name__ == "__main__":
    sys.exit(main())
