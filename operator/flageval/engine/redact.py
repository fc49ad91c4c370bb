"""What is kept or shown (journals, logs, errors) never carries what a request carried but a record
should not: pictures (base64 data URLs, replaced by a short description) and the API key."""

from __future__ import annotations

import json
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


REDACTED = "[redacted]"
NO_KEY = ("", "EMPTY")  # FlagEval's "no key": nothing to hide


def redact_secret(text: str, secret: str | None) -> str:
    """`text` without `secret`, also as JSON escapes it (an endpoint may quote the Authorization
    header it got in an error body, raw or inside a JSON string)."""
    if not secret or secret in NO_KEY:
        return text
    for form in dict.fromkeys((secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])):
        text = text.replace(form, REDACTED)
    return text


__all__ = ["DATA_URL", "REDACTED", "redact_data_urls", "redact_secret"]
