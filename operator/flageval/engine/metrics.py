"""Prometheus metrics of the engine, on the default registry (a runner exposes them if it wants to)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "flageval_engine_requests_total",
    "HTTP attempts sent to model endpoints, by outcome (ok, timeout, connection_error, malformed, http_4xx, http_5xx).",
    ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "flageval_engine_request_seconds",
    "Duration of one HTTP attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
RETRIES = Counter("flageval_engine_retries_total", "Attempts repeated after a retryable failure.")
RETRIES_BY_KIND = Counter("flageval_engine_retries_by_kind_total",
                          "Attempts repeated, by the kind of failure before them (http_503, timeout, …).", ["kind"])
OUTPUT_TOKENS = Counter("flageval_engine_output_tokens_total", "Completion tokens the service reported in usage.")
ANSWERS = Counter("flageval_engine_answers_total",
                  "Answers received (not from the cache), by finish_reason (stop, length, …; 'none' when absent).",
                  ["finish_reason"])
SAMPLE_ERRORS = Counter(
    "flageval_engine_sample_errors_total",
    "Requests given up on, by reason (out_of_retries, rejected, breaker).",
    ["reason"],
)
CACHE_LOOKUPS = Counter("flageval_engine_cache_lookups_total", "Response cache lookups, by result.", ["result"])
SAMPLES = Counter("flageval_engine_samples_total", "Samples finished, by result (ok, failed, skipped).", ["result"])
SAMPLES_OK = SAMPLES.labels(result="ok")
SAMPLES_FAILED = SAMPLES.labels(result="failed")
SAMPLES_SKIPPED = SAMPLES.labels(result="skipped")
CACHE_HITS = CACHE_LOOKUPS.labels(result="hit")
CACHE_MISSES = CACHE_LOOKUPS.labels(result="miss")

_outcome_children: dict[str, Counter] = {}


def observe_attempt(outcome: str, seconds: float) -> None:
    child = _outcome_children.get(outcome)
    if child is None:
        child = _outcome_children[outcome] = REQUESTS.labels(outcome=outcome)
    child.inc()
    REQUEST_SECONDS.observe(seconds)


def retried(kind: str) -> None:
    RETRIES_BY_KIND.labels(kind=kind or "other").inc()


_answer_children: dict[str | None, Counter] = {}


def answered(finish_reason: str | None, output_tokens: int | None) -> None:
    child = _answer_children.get(finish_reason)
    if child is None:
        child = _answer_children[finish_reason] = ANSWERS.labels(finish_reason=finish_reason or "none")
    child.inc()
    if output_tokens:
        OUTPUT_TOKENS.inc(output_tokens)
