"""Which lm-evaluation-harness task, group or tag a name means, without parsing all of lm-eval's YAML.

lm-eval's TaskManager scans its ~9,000 task files on every start (seconds of CPU). The scan of the
pinned version is kept in index.json.gz beside this file (hack/gen_lmeval_index.py writes it; a test
checks it against a fresh scan); a user's include path is small and is scanned when given.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lm_eval.tasks._index import Entry

INDEX_FILE = Path(__file__).with_name("index.json.gz")


def tasks_dir() -> Path:
    """lm_eval/tasks of the installed lm-eval, found without importing it."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lm-eval is not installed (pip install 'flageval-operator[tasks]')")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def scan_builtin() -> dict[str, list]:
    """lm-eval's own index of its tasks, as {name: [kind, YAML path under lm_eval/tasks or None, tags]}."""
    from lm_eval.tasks._index import TaskIndex

    root = tasks_dir()
    entries = TaskIndex.build([root])
    return {
        name: [e.kind.name, e.yaml_path.relative_to(root).as_posix() if e.yaml_path else None, sorted(e.tags)]
        for name, e in entries.items()
    }


@lru_cache(maxsize=1)
def builtin_names() -> dict[str, list]:
    return json.loads(gzip.decompress(INDEX_FILE.read_bytes()))


def encode(index: dict[str, list]) -> bytes:
    """The file's bytes: compact JSON, gzip without a timestamp (the same scan gives the same bytes)."""
    text = json.dumps(index, sort_keys=True, separators=(",", ":"))
    return gzip.compress(text.encode("utf-8"), mtime=0)


def is_builtin(name: str) -> bool:
    return name in builtin_names()


def registry(include_paths: tuple[Path, ...] = ()) -> dict[str, Entry]:
    """name → lm-eval Entry for the built-in tasks, then the include paths' (which win, as in lm-eval)."""
    from lm_eval.tasks._index import Entry, Kind

    root = tasks_dir()
    index = {
        name: Entry(name=name, kind=Kind[kind], yaml_path=root / path if path else None, tags=set(tags))
        for name, (kind, path, tags) in builtin_names().items()
    }
    if include_paths:
        index.update(scan(include_paths)[0])
    return index


@lru_cache(maxsize=8)
def scan(include_paths: tuple[Path, ...]) -> tuple[dict[str, Entry], tuple[str, ...]]:
    """The include paths' tasks, and why each YAML file that could not be read was skipped ("file: reason",
    with the line where YAML gives one). lm-eval's own scan skips such files without a word."""
    from lm_eval.tasks._index import TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    entries: dict[str, Entry] = {}
    problems: list[str] = []
    for root in include_paths:
        root = Path(root)
        if not root.is_dir():
            problems.append(f"{root}: not a directory")
            continue
        for path in TaskIndex._iter_yaml_files(root):
            try:
                config = load_yaml(path, resolve_func=False, recursive=True)
                TaskIndex.process_cfg(config, path, entries)
            except Exception as exc:  # noqa: BLE001 - a bad file is reported, never fatal
                problems.append(f"{path}: {' '.join(str(exc).split())}")
    return entries, tuple(problems)
