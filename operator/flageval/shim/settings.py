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
    # Requests a second per client address (0: no limit), and the burst allowed above it. The default is
    # above what one server answers on two cores, so only a runaway client meets it; deployments lower it.
    rate_limit: float = 5000.0
    rate_burst: int = 5000
    body_timeout: float = 30.0  # seconds for a request's body to arrive once its headers have (0: none)
