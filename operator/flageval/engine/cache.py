"""Response cache shared by the runs of one model on one service, safe on a filesystem many Jobs mount.

Layout: <root>/<model slug>-<hash of (eval_url, model)>/ holds, per writer, an append-only data file
`<writer>.jsonl` (lines `<key>\\t<choice JSON>`) and an index `<writer>.idx` (lines `<key> <offset> <length>`).
Index lines are written in small batches after their data. Writers never share a file (the name carries host, pid and a random part), so no locking is needed;
readers load every index when they open (small, even when the data holds prompt logprobs) and read a
data line only on a hit. A line still being written by another writer is ignored; an index entry that
points at bytes not (yet) there is a miss.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any, Self

import orjson

from flageval.engine import metrics


def cache_key(eval_url: str, model: str, canonical_body: bytes) -> str:
    """sha256 of (service URL, model, canonical JSON of the full request body)."""
    digest = hashlib.sha256()
    digest.update(eval_url.rstrip("/").encode())
    digest.update(b"\n")
    digest.update(model.encode())
    digest.update(b"\n")
    digest.update(canonical_body)
    return digest.hexdigest()


def cache_dir_name(eval_url: str, model: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")[:60] or "model"
    scope = hashlib.sha256(f"{eval_url.rstrip('/')}\n{model}".encode()).hexdigest()[:16]
    return f"{slug}-{scope}"


class ResponseCache:
    """Successful replies (the raw OpenAI choice) by cache_key, for one (service, model)."""

    def __init__(self, root: str | os.PathLike[str], eval_url: str, model: str) -> None:
        self.eval_url = eval_url
        self.model = model
        self.dir = Path(root) / cache_dir_name(eval_url, model)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._scope_hash = hashlib.sha256(f"{eval_url.rstrip('/')}\n{model}\n".encode())
        self.hits = 0
        self.misses = 0
        self._exported = (0, 0)
        self._pending_index: list[bytes] = []
        self._index: dict[bytes, tuple[int, int, int]] = {}  # key digest → (file slot, offset, length)
        self._files: list[Path] = []
        self._fds: dict[int, int] = {}
        self._writer_slot: int | None = None
        self._data_fd: int | None = None
        self._index_fd: int | None = None
        self._data_size = 0
        self._load()

    def key(self, canonical_body: bytes) -> str:
        """cache_key(eval_url, model, canonical_body), with the (url, model) part hashed once."""
        digest = self._scope_hash.copy()
        digest.update(canonical_body)
        return digest.hexdigest()

    def _load(self) -> None:
        for index_path in sorted(self.dir.glob("*.idx")):
            data_path = index_path.with_suffix(".jsonl")
            if not data_path.exists():
                continue
            slot = len(self._files)
            self._files.append(data_path)
            try:
                raw = index_path.read_bytes()
            except OSError:
                continue
            for line in raw.split(b"\n")[:-1]:  # the piece after the last newline may be unfinished
                parts = line.split(b" ")
                if len(parts) != 3 or len(parts[0]) != 64:
                    continue
                try:
                    self._index[bytes.fromhex(parts[0].decode())] = (slot, int(parts[1]), int(parts[2]))
                except ValueError:
                    continue

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._index.get(bytes.fromhex(key))
        choice = self._read(key, entry) if entry is not None else None
        if choice is None:
            self.misses += 1
        else:
            self.hits += 1
        return choice

    def export_metrics(self) -> None:
        """Add the lookups since the last call to the Prometheus counters (kept off the per-request path)."""
        metrics.CACHE_HITS.inc(self.hits - self._exported[0])
        metrics.CACHE_MISSES.inc(self.misses - self._exported[1])
        self._exported = (self.hits, self.misses)

    def _read(self, key: str, entry: tuple[int, int, int]) -> dict[str, Any] | None:
        slot, offset, length = entry
        try:
            fd = self._fds.get(slot)
            if fd is None:
                fd = self._fds[slot] = os.open(self._files[slot], os.O_RDONLY)
            line = os.pread(fd, length, offset)
        except OSError:
            return None
        if len(line) != length or not line.startswith(key.encode() + b"\t") or not line.endswith(b"\n"):
            return None
        try:
            choice = orjson.loads(line[65:])
        except ValueError:
            return None
        return choice if isinstance(choice, dict) else None

    def put(self, key: str, choice: dict[str, Any]) -> None:
        if self._data_fd is None:
            self._open_writer()
        assert self._data_fd is not None and self._index_fd is not None and self._writer_slot is not None
        line = key.encode() + b"\t" + orjson.dumps(choice) + b"\n"
        offset = self._data_size
        _write_all(self._data_fd, line)
        self._data_size += len(line)
        # Index lines follow their data, a few at a time: a reader that sees one finds the data complete,
        # and an entry whose index line was lost with its process is only a miss.
        self._pending_index.append(f"{key} {offset} {len(line)}\n".encode())
        if len(self._pending_index) >= 32:
            self.flush_index()
        self._index[bytes.fromhex(key)] = (self._writer_slot, offset, len(line))

    def flush_index(self) -> None:
        if self._pending_index and self._index_fd is not None:
            _write_all(self._index_fd, b"".join(self._pending_index))
        self._pending_index.clear()

    def _open_writer(self) -> None:
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        data_path = self.dir / f"{name}.jsonl"
        self._data_fd = os.open(data_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._index_fd = os.open(self.dir / f"{name}.idx", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._data_size = 0
        self._writer_slot = len(self._files)
        self._files.append(data_path)

    def close(self) -> None:
        self.flush_index()
        self.export_metrics()
        for fd in (self._data_fd, self._index_fd):
            if fd is not None:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._data_fd = self._index_fd = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
