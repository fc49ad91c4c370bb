"""Reading benchmark files with errors that name the file and the reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from flageval.datasets.base import DatasetError


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - opened apart from reading, to name the cause
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read: {exc.strerror or exc}") from None
    rows = []
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{number} is not JSON ({exc.msg})") from None
                missing = [key for key in required if not isinstance(row, dict) or key not in row]
                if missing:
                    raise DatasetError(f"{path}:{number} lacks {', '.join(missing)}")
                rows.append(row)
        except UnicodeDecodeError:
            raise DatasetError(f"{path} is not UTF-8 text") from None
    if not rows:
        raise DatasetError(f"{path} holds no rows")
    return rows


def read_csv(path: Path, header: list[str]) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} cannot be read: {exc}") from None
    if not rows or rows[0] != header:
        raise DatasetError(f"{path} does not start with the header {','.join(header)}")
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise DatasetError(f"{path}:{number} has {len(row)} fields, expected {len(header)}")
    return rows[1:]
