"""Reading finished runs back: sample-level disagreements between two runs (compare) and the HTML report
(html). Depends on api, results, verdict and baseline only; the CLI, the REST server and the operator call it."""

from flageval.report.compare import (
    Disagreement,
    FlippedSample,
    RunDir,
    compare_runs,
    disagreement,
    load_run,
)

__all__ = ["Disagreement", "FlippedSample", "RunDir", "compare_runs", "disagreement", "load_run"]
