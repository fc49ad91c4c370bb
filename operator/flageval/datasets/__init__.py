"""Benchmarks: one small module each (load → prompt → extract → score), found by name here."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from flageval.datasets.base import Dataset, DatasetError
from flageval.engine.types import EndpointKind

# name → "module:factory"; imported on use so one dataset's dependencies never burden another.
DATASETS: dict[str, str] = {
    "gsm8k": "flageval.datasets.gsm8k:GSM8K",
    "mmlu": "flageval.datasets.mmlu:MMLU",
    "mathvision": "flageval.datasets.mathvision:MathVision",
    "pca_eval_domestic": "flageval.datasets.pca_eval:PCAEvalDomestic",
    "erqa": "flageval.datasets.erqa:ERQA",
    "where2place": "flageval.datasets.where2place:Where2Place",
}

# domain → mode → datasets. A mode is a named suite; "default" is what a domain runs when none is named.
SUITES: dict[str, dict[str, list[str]]] = {
    "NLP": {
        "default": ["gsm8k", "mmlu"],
        "gsm8k": ["gsm8k"],
        "mmlu": ["mmlu"],
        # Chip parity beyond the pair: long generations, loglikelihood numerics, instruction following, code.
        # arc_challenge, hellaswag, winogrande and truthfulqa_mc2 score by loglikelihood (completions endpoints).
        "classic": ["gsm8k", "mmlu", "arc_challenge", "hellaswag", "winogrande", "truthfulqa_mc2", "bbh_cot_fewshot",
                    "ifeval", "minerva_math500", "aime24", "aime25", "humaneval"],
    },
    # MM and EV defaults: those whose files are present (see suite).
    "MM": {"default": ["mathvision"], "mathvision": ["mathvision"]},
    "EV": {"default": ["pca_eval_domestic", "erqa", "where2place"], "pca_eval_domestic": ["pca_eval_domestic"],
           "erqa": ["erqa"], "where2place": ["where2place"]},
}

SUITES_ENV = "FLAGEVAL_SUITES"  # a file of users' own suites, read wherever a mode is resolved

_REPO_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
_IMAGE_DATA = Path("/data/datasets")


def default_data_dir() -> Path:
    """FLAGEVAL_DATA_DIR, else ../shared/datasets beside a source checkout, else the runner image's /data/datasets."""
    if os.environ.get("FLAGEVAL_DATA_DIR"):
        return Path(os.environ["FLAGEVAL_DATA_DIR"])
    return _REPO_DATA if _REPO_DATA.is_dir() else _IMAGE_DATA


def _factory(name: str, include_paths: Sequence[Path] = ()) -> Callable[..., Dataset]:
    if name not in DATASETS:
        # Any other name may be an lm-evaluation-harness task, group or tag (the optional `tasks` extra).
        try:
            from flageval.datasets.lmeval import LMEvalTask, known
        except ImportError:
            known = None
        # With include paths, an unknown name may be a task in a file that could not be read: the task's
        # loader says which.
        if known is not None and (include_paths or known(name, include_paths)):
            return partial(LMEvalTask, name, include_paths=include_paths)
        raise DatasetError(f"unknown dataset '{name}': neither one of {', '.join(sorted(DATASETS))} "
                           "nor an lm-evaluation-harness task, group or tag")
    module_name, _, attr = DATASETS[name].partition(":")
    from importlib import import_module

    return getattr(import_module(module_name), attr)


def is_dataset(name: str, include_paths: Sequence[Path] = ()) -> bool:
    """A native dataset, or an installed lm-evaluation-harness task, group or tag."""
    if name in DATASETS:
        return True
    try:
        from flageval.datasets.lmeval import known
    except ImportError:  # lm-eval not installed: native datasets only
        return False
    return known(name, include_paths)


def get_dataset(
    name: str,
    data_dir: Path | str | None = None,
    *,
    limit: int | None = None,
    mode: str | None = None,
    kind: EndpointKind = "chat",
    include_paths: Sequence[Path] = (),
    allow_code_execution: bool = False,
) -> Dataset:
    """Load a dataset by name: a native one, else an lm-eval task, group or tag (include_paths: the user's
    own task YAML folders). Raises DatasetError with a one-line reason when it cannot."""
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be positive, got {limit}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not data_dir.is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist (set FLAGEVAL_DATA_DIR or --data-dir)")
    factory = _factory(name, include_paths)
    if isinstance(factory, partial):
        return factory(data_dir, limit=limit, mode=mode, kind=kind, allow_code_execution=allow_code_execution)
    return factory(data_dir, limit=limit, mode=mode, kind=kind)


def present(name: str, data_dir: Path | str) -> bool:
    """Whether a dataset's files are under data_dir (datasets without that check: always)."""
    return getattr(_factory(name), "present", lambda _: True)(Path(data_dir))


def user_suites(path: Path | str | None = None) -> dict[str, dict[str, list[str]]]:
    """Suites a user defines in a YAML (or JSON) file — `path`, else the file FLAGEVAL_SUITES names — shaped as
    SUITES: {domain: {suite name: [datasets and lm-eval tasks]}}. No file: none. Raises DatasetError naming the
    file and what is wrong; a built-in suite is not redefined."""
    path = path or os.environ.get(SUITES_ENV)
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"suites file {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"suites file {path}: expected a mapping of domain → suite name → datasets, e.g. "
                           "{NLP: {parity: [gsm8k, arc_challenge]}}")
    found: dict[str, dict[str, list[str]]] = {}
    for domain, named in data.items():
        if domain not in SUITES:
            raise DatasetError(f"suites file {path}: unknown domain '{domain}'; known: {', '.join(SUITES)}")
        if not isinstance(named, dict):
            raise DatasetError(f"suites file {path}: {domain} must map suite names to lists of datasets")
        for name, names in named.items():
            where = f"suites file {path}: {domain} suite '{name}'"
            if not isinstance(name, str) or not name:
                raise DatasetError(f"suites file {path}: {domain}: a suite name must be a non-empty string")
            if name in SUITES[domain]:
                raise DatasetError(f"{where} is built in; give yours another name")
            if (not isinstance(names, list) or not names
                    or not all(isinstance(n, str) and n.strip() for n in names)):
                raise DatasetError(f"{where} must be a non-empty list of dataset names")
            found.setdefault(domain, {})[name] = list(dict.fromkeys(n.strip() for n in names))
    return found


def suites(domain: str, path: Path | str | None = None) -> dict[str, list[str]]:
    """A domain's suites by name: the built-in ones, then the user's (see user_suites)."""
    modes = SUITES.get(domain)
    if modes is None:
        raise DatasetError(f"unknown domain '{domain}'; known: {', '.join(SUITES)}")
    return {**modes, **user_suites(path).get(domain, {})}


def suite(domain: str, mode: str | None = None, data_dir: Path | str | None = None,
          suites_file: Path | str | None = None) -> list[str]:
    """The datasets a domain's mode names (mode None: the domain's default suite; a user's suite from
    `suites_file`, else FLAGEVAL_SUITES).

    With data_dir, the default MM and EV suites keep the datasets whose files are there; when none
    is, all stay, so that each fails with the location it expected."""
    modes = suites(domain, suites_file)
    key = mode or "default"
    if key not in modes:
        raise DatasetError(f"unknown mode '{key}' for domain {domain}; known: {', '.join(modes)}")
    names = list(modes[key])
    if data_dir is not None and key == "default" and domain in ("MM", "EV"):
        found = [name for name in names if present(name, data_dir)]
        names = found or names
    return names


__all__ = ["DATASETS", "SUITES", "SUITES_ENV", "Dataset", "DatasetError", "default_data_dir", "get_dataset", "is_dataset", "present",
           "suite", "suites", "user_suites"]
