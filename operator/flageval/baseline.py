"""Which run a service's accuracies are compared with: the baseline rule, stated once.

A baseline is a service whose eval_model ends in '-nvidia-origin'; it stands for its baseline key
(base_model_name, else model). For a service of key K the baseline is, in this order:

1. a baseline service of K in the same evaluation (for FlagEval's /evaluation_diffs: among the
   evaluations compared, in the order given);
2. when a baseline evaluation is named explicitly: its baseline service of K, and nothing else;
3. else the newest other evaluation's succeeded baseline service of K.

A baseline service is its own reference (diff 0), except in /evaluation_diffs, which compares every
service with one baseline and, as FlagEval does, falls back to the first marked service of any key,
else the first service compared.

The controller, both backends and the REST layer build candidates from what they hold and call
`choose_baseline`; nothing else decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from flageval.api.evalinfo import is_baseline_name

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One service that may serve as a baseline, as whoever holds it sees it."""

    evaluation: str  # request_id / Evaluation name
    eval_model: str
    key: str  # base_model_name, else model
    succeeded: bool = False  # every dataset of the service succeeded
    created: float = 0.0  # when its evaluation was created; newer is larger
    ref: T | None = field(default=None, compare=False)  # the caller's handle on its results

    @property
    def is_baseline(self) -> bool:
        return is_baseline_name(self.eval_model)

    def same_service(self, other: Candidate) -> bool:
        return (self.evaluation, self.eval_model) == (other.evaluation, other.eval_model)


def choose_baseline(
    service: Candidate,
    own: Sequence[Candidate[T]],
    others: Sequence[Candidate[T]] = (),
    *,
    named: str | None = None,
    compare_all: bool = False,
) -> Candidate[T] | None:
    """The baseline for `service` by the rule above; `service` itself when it is its own reference;
    None when there is none.

    own: the services of the same evaluation (compare_all: of every evaluation compared), in order;
    others: the services of other evaluations; named: the explicitly named baseline evaluation."""
    if service.is_baseline and not compare_all:
        return service
    marked = [c for c in own if c.is_baseline]
    same_key = next((c for c in marked if c.key == service.key), None)
    if same_key is not None:
        return same_key
    if compare_all:
        return marked[0] if marked else (own[0] if own else None)
    if named is not None:
        return next((c for c in others if c.evaluation == named and c.is_baseline and c.key == service.key), None)
    succeeded = [c for c in others if c.is_baseline and c.key == service.key and c.succeeded]
    return max(succeeded, key=lambda c: c.created, default=None)
