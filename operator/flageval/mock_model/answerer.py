"""How the reference model decides what to answer. The HTTP server (server.py) knows no benchmark."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol


def intends_correct(sample_key: str, accuracy: float, seed: int = 0) -> bool:
    """Deterministic per question: the same key, accuracy and seed always give the same verdict."""
    digest = hashlib.sha256(f"{seed}:{sample_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < accuracy


class Answerer(Protocol):
    """Recognises a benchmark question in a request and answers it right or wrong as intended."""

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        """→ (sample_key, answer content). sample_key identifies the question (for request counting)."""

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """→ (sample_key, OpenAI completions choice: text, and logprobs when asked with echo)."""
