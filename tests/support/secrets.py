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


def cluster_texts(kube, namespace: str) -> dict[str, str]:
    """Every object of `namespace` a run leaves, as JSON: Evaluations (with status), task results, Jobs,
    Pods, Events, ConfigMaps. Not Secrets: holding the key is their job."""
    import json

    from flageval.api.evaluation import GROUP, PLURAL, TASK_RESULT_PLURAL, VERSION

    def dump(items) -> str:
        return json.dumps(kube.api.sanitize_for_serialization(items))

    return {
        "Evaluations": dump(kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)),
        "EvaluationTaskResults": dump(kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, TASK_RESULT_PLURAL)),
        "Jobs": dump(kube.batch.list_namespaced_job(namespace)),
        "Pods": dump(kube.core.list_namespaced_pod(namespace)),
        "Events": dump(kube.core.list_namespaced_event(namespace)),
        "ConfigMaps": dump(kube.core.list_namespaced_config_map(namespace)),
    }
