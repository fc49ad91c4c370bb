"""Requests carry pictures as base64 data URLs; whatever is kept or shown (journals, logs, errors)
carries a short description of each instead."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

DATA_URL = re.compile(r"^data:([\w/+.-]+);base64,")


def redact_data_urls(value: Any, names: Sequence[str] = ()) -> Any:
    """A copy of messages/content parts with each data URL replaced by a short description, so that
    records and logs never carry the pictures. names[i] labels the i-th data URL found."""
    counter = iter(names)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            match = DATA_URL.match(node) if node.startswith("data:") else None
            if not match:
                return node
            label = next(counter, None)
            size = len(node) - match.end()
            return f"[{match.group(1)} base64, {size} chars{': ' + label if label else ''}]"
        if isinstance(node, Mapping):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list | tuple):
            return [walk(item) for item in node]
        return node

    return walk(value)


__all__ = ["DATA_URL", "redact_data_urls"]
