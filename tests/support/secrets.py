"""Search everything a run produced for a planted API key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


def places_holding(secret: str, texts: Mapping[str, str] | None = None, roots: Iterable[Path] = ()) -> tuple[list[str], int]:
    """(where `secret` occurs: names of `texts` and files under `roots`, how many files were read).
    Files are searched as bytes, so a key in any encoding of UTF-8 text, or in binary, is found."""
    found = [name for name, text in (texts or {}).items() if secret in text]
    needle, read = secret.encode(), 0
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            read += 1
            if needle in data:
                found.append(str(path))
    return found, read
