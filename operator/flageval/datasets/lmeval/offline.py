"""lm-eval tasks built from local files only: a task's Hugging Face dataset is read from
`<data dir>/hf/<dataset_path>/<dataset_name or default>/<split>.jsonl`; its own
`dataset_kwargs.data_files` are read as given. Nothing ever contacts a hub.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flageval.datasets.base import DatasetError
from flageval.datasets.files import read_jsonl

# Set before `datasets` or `huggingface_hub` is imported: any path that would still reach a hub fails
# at once instead of waiting on the network.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_PATCH_LOCK = threading.Lock()


def hf_folder(data_dir: Path, dataset_path: str, dataset_name: str | None) -> Path:
    return Path(data_dir) / "hf" / dataset_path / (dataset_name or "default")


def _local_download(data_dir: Path):
    """Stands in for ConfigurableTask.download while tasks are built."""
    import datasets

    def download(task: Any, dataset_kwargs: dict[str, Any] | None = None, **_: Any) -> None:
        _build_once(task)
        config = task.config
        kwargs = dict(dataset_kwargs or {})
        kwargs.pop("trust_remote_code", None)
        if callable(config.custom_dataset):
            task.dataset = config.custom_dataset(**(config.metadata or {}), **kwargs)
            return
        if "data_files" in kwargs:  # the task names its own files: lm-eval's way to use local data
            kwargs["data_files"] = _beside_the_task(kwargs["data_files"], config)
            try:
                task.dataset = datasets.load_dataset(path=config.dataset_path, name=config.dataset_name, **kwargs)
            except FileNotFoundError as exc:
                raise DatasetError(f"{config.task}: {exc}") from None
            return
        task.dataset = _from_data_dir(task, Path(data_dir))

    return download


def _build_once(task: Any) -> None:
    """While lm-eval builds a task (download is the first thing it does): each split is processed once,
    not once for the few-shot pool and again for the documents (lm-eval's process_docs run by `datasets.map`:
    seconds for 10,000 documents); a 0-shot task gets no few-shot sampler, which would copy its pool
    document by document and never draw from it (`built` gives it back its own once the task is made)."""
    for name in ("training_docs", "validation_docs", "test_docs"):
        setattr(task, name, _once(getattr(task, name)))
    if not (task.config.num_fewshot or 0):
        task.fewshot_docs = lambda: None


def _once(method: Any) -> Any:
    results: list[Any] = []

    def once() -> Any:
        if results:
            return results[0]
        docs = method()
        if hasattr(docs, "__len__") and hasattr(docs, "__getitem__"):  # a Dataset or a list: read again at will
            results.append(docs)
        return docs  # a generator (a task class's own) is made anew each time, as lm-eval makes it

    return once


def built(task: Any) -> None:
    """The task made: its few-shot pool is its own again; its splits stay processed once (lm-eval's
    results count the documents through eval_docs, which would process them again)."""
    task.__dict__.pop("fewshot_docs", None)


def _beside_the_task(data_files: Any, config: Any) -> Any:
    """Relative data files are read from the working directory, as lm-eval reads them; one that is not
    there but beside the task's YAML (a task folder mounted from a ConfigMap) is read from there."""
    source = (config.metadata or {}).get("config_source") if isinstance(config.metadata, dict) else None
    if not source or source == "inline":
        return data_files
    folder = Path(source).parent

    def resolve(path: Any) -> Any:
        if isinstance(path, str) and not Path(path).is_absolute() and not Path(path).exists() and (folder / path).exists():
            return str(folder / path)
        return path

    if isinstance(data_files, dict):
        return {split: [resolve(p) for p in paths] if isinstance(paths, list) else resolve(paths)
                for split, paths in data_files.items()}
    if isinstance(data_files, list):
        return [resolve(p) for p in data_files]
    return resolve(data_files)


def _from_data_dir(task: Any, data_dir: Path):
    import datasets

    config = task.config
    folder = hf_folder(data_dir, config.dataset_path, config.dataset_name)
    eval_split = config.test_split or config.validation_split
    if eval_split is None:
        raise DatasetError(f"{config.task} names neither a test nor a validation split")
    files: dict[str, Path] = {}
    for split in dict.fromkeys(s for s in (config.test_split, config.validation_split, config.training_split,
                                           task.fewshot_cfg.split) if s):
        path = folder / f"{split}.jsonl"
        if path.exists():
            files[split] = path
        elif split == eval_split:
            raise DatasetError(f"{config.task}: {path} is missing (its {split} split)")
    splits = _read_splits(files)
    shots = config.num_fewshot or 0
    pool = task.fewshot_cfg.split or (None if task.fewshot_cfg.samples is not None else config.training_split)
    if pool is not None and pool not in splits:
        if shots > 0:
            raise DatasetError(f"{config.task} takes {shots} few-shot examples from its {pool} split, "
                               f"and {folder / (pool + '.jsonl')} is absent; run it 0-shot")
        # lm-eval reads the pool when the task is built even for 0-shot runs; without it, it has none.
        if config.training_split == pool:
            config.training_split = None
        if task.fewshot_cfg.split == pool:
            task.fewshot_cfg.split = None
    return datasets.DatasetDict(splits)


CACHED_FROM_BYTES = 4 << 20  # splits this large go through datasets' cache; smaller ones are read at once


def _read_splits(files: dict[str, Path]) -> dict[str, Any]:
    """The splits of a task. Large ones through `datasets`' json loader, as lm-eval's documented local route
    reads them: Hugging Face's cache keeps their Arrow form and what a task's process_docs makes of them
    (`map` results, by content), so a second run of HellaSwag starts without processing its 10,042 documents
    again. Small ones (a group's many sub-tasks: BBH's 27) are read into memory, which costs less than the
    loader's own work per split. Where no cache can be written (a read-only home) or the loader fails, the
    files are read into memory too."""
    import datasets

    def in_memory() -> dict[str, Any]:
        return {split: datasets.Dataset.from_list(read_jsonl(path, ())) for split, path in files.items()}

    if not files or sum(path.stat().st_size for path in files.values()) < CACHED_FROM_BYTES:
        return in_memory()
    try:
        loaded = datasets.load_dataset("json", data_files={split: str(path) for split, path in files.items()})
        return {split: loaded[split] for split in files}
    except Exception:  # noqa: BLE001 - any failure: the plain reader, which names a bad line
        return in_memory()


@contextlib.contextmanager
def local_data(data_dir: Path) -> Iterator[None]:
    """While tasks are built in this block, their data comes from data_dir (or their own data_files)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    datasets.disable_progress_bars()  # a bar per processed split, in a runner's log
    with _PATCH_LOCK:
        original = ConfigurableTask.download
        ConfigurableTask.download = _local_download(data_dir)
        try:
            yield
        finally:
            ConfigurableTask.download = original
