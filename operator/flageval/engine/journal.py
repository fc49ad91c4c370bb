"""The checkpoint: an append-only JSONL file of finished samples, one writer, fsync'd in batches.

Each record is handed to the kernel as soon as it is appended (one write of one whole line), so a
killed process loses nothing it journaled; fsync runs every `fsync_every` records or `fsync_interval`
seconds — on a thread when an event loop appends, so that its workers never wait for the disk — and on
flush/close, which bounds what a crashed node can lose. A torn last line (the node died
mid-write) is cut off when the journal is opened.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from flageval.api import SampleRecord


class Journal:
    def __init__(self, path: str | os.PathLike[str], *, fsync_every: int = 1024, fsync_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_every = max(1, fsync_every)
        self.fsync_interval = fsync_interval
        self.torn_bytes_dropped = 0
        self.unreadable_lines = 0
        # id → the latest record had no error
        self._ok: dict[str, bool] = {}
        self._recover()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._syncing: asyncio.Task | None = None  # the background fsync asked for by append

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn_bytes_dropped = len(data) - end
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._ok[str(entry["id"])] = entry.get("error") is None
            except (ValueError, KeyError, TypeError):
                self.unreadable_lines += 1

    def finished_ids(self) -> set[str]:
        """Samples whose latest record succeeded; failed ones are tried again by the next run."""
        return {sample_id for sample_id, ok in self._ok.items() if ok}

    def failed_ids(self) -> set[str]:
        return {sample_id for sample_id, ok in self._ok.items() if not ok}

    def __len__(self) -> int:
        return len(self._ok)

    def _read(self) -> Iterator[SampleRecord]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n") or not line.strip():
                    continue
                try:
                    yield SampleRecord.model_validate_json(line)
                except ValueError:
                    continue

    def latest(self) -> dict[str, SampleRecord]:
        """The latest record of every sample (read from disk: records are not kept in memory)."""
        latest: dict[str, SampleRecord] = {}
        for record in self._read():
            latest[record.id] = record
        return latest

    def records(self) -> list[SampleRecord]:
        """Latest record per sample, in dataset order."""
        return sorted(self.latest().values(), key=lambda r: r.index)

    def append(self, record: SampleRecord) -> None:
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        line = record.model_dump_json().encode() + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._ok[record.id] = record.error is None
        self._unsynced += 1
        if self._unsynced >= self.fsync_every:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: nobody waits but the caller
                self.flush()
            else:
                if self._syncing is None or self._syncing.done():
                    self._syncing = loop.create_task(self.flush_in_background())

    def flush(self) -> None:
        """Make every appended record durable."""
        if self._fd is not None:
            os.fsync(self._fd)  # also when a background fsync may still be under way
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def flush_due(self) -> bool:
        return bool(self._unsynced) and time.monotonic() - self._last_sync >= self.fsync_interval

    async def flush_in_background(self) -> None:
        """fsync in a thread, so that the workers keep going while the disk catches up."""
        if self._fd is None or not self._unsynced:
            return
        fd = self._fd
        self._unsynced = 0
        self._last_sync = time.monotonic()
        await asyncio.to_thread(_fsync_quietly, fd)

    def close(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_quietly(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # closed meanwhile: close() synced it
        pass
