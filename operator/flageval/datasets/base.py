"""What a benchmark module provides. Datasets build work items and score replies; they send nothing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from flageval.api import SampleRecord
from flageval.engine.types import EndpointKind, Reply, WorkItem


class DatasetError(Exception):
    """A dataset cannot be loaded (missing or unreadable files, unknown name): a configuration error."""


class Dataset(Protocol):
    name: str
    domain: str  # "NLP", "MM" or "EV"

    def total(self) -> int:
        """Number of samples that will be evaluated (after limit)."""

    def items(self, kind: EndpointKind) -> Iterator[WorkItem]:
        """Work items in dataset order, built lazily (a worker pool pulls them as it goes)."""

    def score(self, item: WorkItem, replies: list[Reply]) -> SampleRecord:
        """Score one sample from the replies to its bodies (same order)."""

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        """Metrics in percent; the key 'accuracy' is the dataset's headline figure."""


class DatasetFactory(Protocol):
    def __call__(self, data_dir: Path, limit: int | None = None, *, mode: str | None = None) -> Dataset: ...
