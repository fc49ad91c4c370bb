"""Where one service's runs live on disk (a local directory or the results PVC).

    <output>/<dataset>/run.json        which run this is: a journal resumes only the run that wrote it
    <output>/<dataset>/journal.jsonl   finished samples, append-only (the checkpoint)
    <output>/<dataset>/samples.jsonl   every sample record in dataset order, written at the end
    <output>/<dataset>/result.json     the DatasetResult
    <output>/<dataset>/progress.json   the latest progress event, while it runs
    <output>/service.json              which service the directory's runs evaluated (no API key)
    <output>/../report.html            on the operator's results volume: the Evaluation's HTML report

The response cache of one (service, model) lives under the cache root (flageval.engine.cache).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flageval.api import DatasetResult, Progress, SampleRecord


@dataclass(frozen=True)
class RunPaths:
    dir: Path

    @property
    def journal(self) -> Path:
        return self.dir / "journal.jsonl"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.jsonl"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    @property
    def run(self) -> Path:
        """What run this directory holds (service, model, dataset, limit, mode): a journal resumes only it."""
        return self.dir / "run.json"

    @property
    def progress(self) -> Path:
        return self.dir / "progress.json"

    @property
    def metrics(self) -> Path:
        """The runner's request, latency and error counters at its end (Prometheus text format)."""
        return self.dir / "metrics.prom"


def run_paths(output: Path, dataset: str) -> RunPaths:
    return RunPaths(Path(output) / dataset)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_result(paths: RunPaths, result: DatasetResult) -> None:
    _atomic_write(paths.result, result.model_dump_json(indent=2) + "\n")


def read_result(paths: RunPaths) -> DatasetResult | None:
    try:
        return DatasetResult.model_validate_json(paths.result.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_samples(paths: RunPaths, records: Iterable[SampleRecord]) -> None:
    ordered = sorted(records, key=lambda r: r.index)
    _atomic_write(paths.samples, "".join(r.model_dump_json() + "\n" for r in ordered))


def read_samples(paths: RunPaths) -> Iterator[SampleRecord]:
    try:
        with open(paths.samples, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield SampleRecord.model_validate(json.loads(line))
    except FileNotFoundError:
        return


SERVICE_FILE = "service.json"
REPORT_FILE = "report.html"  # an evaluation's HTML report, beside its services' directories


def evaluation_dir(root: str, namespace: str, evaluation: str, uid: str) -> str:
    """Where an Evaluation object's services' directories are on the results volume (mounted at `root`): one
    directory per object, so a new object of the same name starts afresh, not from the journals of an
    earlier one (which may have measured another service)."""
    return f"{root}/results/{namespace}/{evaluation}-{uid[:8]}"


def write_service(output: Path, service: dict) -> None:
    """The service's names (eval_model, model, chip, baseline key…) beside its runs: a report reads them."""
    _atomic_write(Path(output) / SERVICE_FILE, json.dumps(service, indent=2, sort_keys=True) + "\n")


def read_service(output: Path) -> dict | None:
    try:
        found = json.loads((Path(output) / SERVICE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def list_results(output: Path) -> list[DatasetResult]:
    """Every dataset result under one service's output directory, sorted by dataset name."""
    found = []
    for child in sorted(Path(output).iterdir()) if Path(output).is_dir() else []:
        if not child.is_dir():  # service.json
            continue
        result = read_result(RunPaths(child))
        if result is not None:
            found.append(result)
    return found


def write_progress(paths: RunPaths, progress: Progress) -> None:
    _atomic_write(paths.progress, progress.model_dump_json() + "\n")


def read_progress(paths: RunPaths) -> Progress | None:
    try:
        return Progress.model_validate_json(paths.progress.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
