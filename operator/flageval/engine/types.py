"""The engine's contract with the datasets: work items in, replies out. No dataset knowledge here."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from flageval.api.urlpolicy import UrlPolicy

EndpointKind = Literal["chat", "completions"]


def endpoint_kind(url: str) -> EndpointKind:
    """…/chat/completions is a chat endpoint; any other …/completions a (legacy) completions endpoint."""
    return "chat" if urlsplit(url).path.rstrip("/").endswith("chat/completions") else "completions"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send requests: one model service, with the knobs of its EvalInfo."""

    url: str
    model: str
    api_key: str = "EMPTY"
    num_concurrent: int = 1
    batch_size: int = 1
    num_retry: int = 10
    retry_time: float = 3600.0
    gen_fields: dict[str, Any] = field(default_factory=dict)  # OpenAI fields from gen_kwargs
    thinking: bool = False
    request_timeout: float = 600.0  # one HTTP attempt; retry_time bounds the whole sample
    url_policy: UrlPolicy | None = None  # every connection's address is checked against it (None: no check)

    @cached_property  # read for every request body
    def kind(self) -> EndpointKind:
        return endpoint_kind(self.url)


@dataclass
class WorkItem:
    """One sample to evaluate: its id and the request bodies it needs (without 'model').

    A chat body carries 'messages'; a completions body carries one 'prompt' string (the engine
    groups `batch_size` of them into one call). Bodies hold everything the dataset wants sent
    (max_tokens, stop, logprobs, echo…); the engine adds 'model', the user's gen_kwargs fields (they
    win over the body's, as lm-eval's --gen_kwargs do; not on `echo` scoring requests), and the
    thinking switch.
    """

    id: str
    index: int
    bodies: list[dict[str, Any]]
    meta: Any = None  # the dataset's own data for scoring (target, choices…); never sent


@dataclass
class Reply:
    """One answer to one body. `text` is what gets scored: reasoning is never part of it."""

    text: str
    reasoning: str | None = None
    logprobs: dict[str, Any] | None = None  # completions: {tokens, token_logprobs, text_offset}
    finish_reason: str | None = None
    cached: bool = False
