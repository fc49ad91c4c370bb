"""Counts finished samples and turns them into Progress events with a rate over a recent window."""

from __future__ import annotations

import time
from collections import deque

from flageval.api import Progress


class ProgressTracker:
    """`done` counts samples that succeeded (including those already in the journal); `failed` those that
    failed in this run. Rate = samples finished per second over the last `window` seconds."""

    def __init__(self, dataset: str, total: int, *, window: float = 10.0) -> None:
        self.dataset = dataset
        self.total = total
        self.window = window
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.finished_here = 0  # succeeded or failed in this run (not skipped)
        self.started = time.monotonic()
        self._marks: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._last_emitted: tuple[int, int] | None = None

    def skip(self) -> None:
        self.done += 1
        self.skipped += 1

    def finish(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.finished_here += 1

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        marks = self._marks
        marks.append((now, self.finished_here))
        while len(marks) > 2 and now - marks[1][0] >= self.window:
            marks.popleft()
        then, count = marks[0]
        span = now - then
        return (self.finished_here - count) / span if span > 0 else 0.0

    def snapshot(self) -> Progress:
        return Progress(dataset=self.dataset, done=self.done, total=self.total, failed=self.failed,
                        rate=round(self.rate(), 3))

    def changed(self) -> bool:
        state = (self.done, self.failed)
        if state == self._last_emitted:
            return False
        self._last_emitted = state
        return True
