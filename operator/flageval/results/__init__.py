"""The on-disk layout of runs: journals, per-sample records, results, response caches."""

from flageval.results.store import (
    REPORT_FILE,
    RunPaths,
    evaluation_dir,
    list_results,
    read_progress,
    read_result,
    read_samples,
    read_service,
    run_paths,
    write_progress,
    write_result,
    write_samples,
    write_service,
)

__all__ = [
    "REPORT_FILE",
    "RunPaths",
    "evaluation_dir",
    "list_results",
    "read_progress",
    "read_result",
    "read_samples",
    "read_service",
    "run_paths",
    "write_progress",
    "write_result",
    "write_samples",
    "write_service",
]
