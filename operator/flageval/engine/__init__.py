"""Sends the requests of one dataset to one endpoint: bounded workers, retries, cache, journal, progress."""

from flageval.engine.cache import ResponseCache, cache_key
from flageval.engine.client import RetryPolicy, split_thinking
from flageval.engine.journal import Journal
from flageval.engine.run import RunSummary, run_dataset
from flageval.engine.types import Endpoint, EndpointKind, Reply, WorkItem, endpoint_kind

__all__ = [
    "Endpoint",
    "EndpointKind",
    "Journal",
    "Reply",
    "ResponseCache",
    "RetryPolicy",
    "RunSummary",
    "WorkItem",
    "cache_key",
    "endpoint_kind",
    "run_dataset",
    "split_thinking",
]
