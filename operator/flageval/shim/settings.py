"""What `flageval serve` configures in the REST application."""

from __future__ import annotations

from dataclasses import dataclass, field

from flageval.api.urlpolicy import UrlPolicy
from flageval.verdict import DEFAULT_TOLERANCE


@dataclass
class ShimSettings:
    token: str | None = None  # bearer token; None: no authentication (loopback only)
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)  # which eval_urls evaluations may call
    max_body_bytes: int = 1 << 20
    tolerance: float = DEFAULT_TOLERANCE
