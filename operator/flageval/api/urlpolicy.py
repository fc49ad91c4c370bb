"""Which eval_url a run may call. eval_url is user input that runners (and the REST API's checks) call,
so without a rule it reaches whatever the caller's network reaches: cloud metadata services, link-local
addresses. One pure function decides (`url_refusal`); every entry calls it: the REST API and the
runner on every address the host resolves to (the runner again on the address it connects to, so a
name that resolves differently the second time gains nothing), the operator on the URL as written, the
CLI to warn.

Refused by default: schemes other than http and https; link-local addresses (169.254.0.0/16,
fe80::/10: cloud metadata services live there); the metadata services' other addresses and names;
unspecified addresses (0.0.0.0/8, ::). Loopback is allowed by default: the local reference model, the
CLI and the local REST backend call services on this machine (deny it with FLAGEVAL_URL_DENY).

Settings, comma-separated CIDRs, addresses and host names ('*.example.com' patterns):
FLAGEVAL_URL_ALLOW lifts the default refusal for what it lists; FLAGEVAL_URL_DENY refuses more, and
wins over FLAGEVAL_URL_ALLOW.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV, DENY_ENV = "FLAGEVAL_URL_ALLOW", "FLAGEVAL_URL_DENY"
SCHEMES = ("http", "https")

# Metadata services by name (resolved inside the cloud to a link-local address, but refused by name too,
# since a resolver or a proxy may map them anywhere).
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com", "metadata.tencentyun.com", "metadata.platformequinix.com",
})
# Literal addresses the Evaluation CRD refuses on its own (CEL cannot resolve names or test CIDRs).
METADATA_LITERALS = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", *sorted(METADATA_HOSTS))

DEFAULT_DENIED: tuple[tuple[Network, str], ...] = tuple((ipaddress.ip_network(cidr), why) for cidr, why in (
    ("169.254.0.0/16", "link-local (cloud metadata services answer at 169.254.169.254)"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "the AWS metadata service (IPv6)"),
    ("100.100.100.200/32", "the Alibaba Cloud metadata service"),
    ("0.0.0.0/8", "unspecified (reaches this host)"),
    ("::/128", "unspecified (reaches this host)"),
))


class UrlRefused(ValueError):
    """An eval_url the policy refuses; the message says which rule."""


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def _address(text: str) -> Address | None:
    """An IP address written any way the resolver accepts: '169.254.169.254', '[::1]', and the legacy
    numeric forms inet_aton takes ('2852039166', '0xa9fea9fe', '0251.0376.0251.0376')."""
    text = text.strip("[]")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone index
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:169.254.169.254 reaches 169.254.169.254
    return address


@dataclass(frozen=True)
class UrlPolicy:
    allow: tuple[str, ...] = ()  # CIDRs, addresses, host names exempt from the default refusal
    deny: tuple[str, ...] = ()  # refused besides the defaults; wins over allow
    hosts: tuple[str, ...] = ()  # when set, only these host names (the REST API's --allow-host)
    _allowed: tuple[tuple[str, Network | str], ...] = field(init=False, repr=False, compare=False, default=())
    _denied: tuple[tuple[str, Network | str], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        # Parsed once: a bad entry fails at start, not at the first request.
        object.__setattr__(self, "_allowed", tuple((entry, self._entry(entry)) for entry in self.allow))
        object.__setattr__(self, "_denied", tuple((entry, self._entry(entry)) for entry in self.deny))

    @staticmethod
    def _entry(entry: str) -> Network | str:
        entry = entry.strip().lower()
        if not entry:
            raise ValueError("empty entry")
        if "/" in entry:
            try:
                return ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"'{entry}' is not a CIDR") from None
        address = _address(entry)
        if address is not None:
            return ipaddress.ip_network(address)
        return entry.rstrip(".")

    @classmethod
    def parse(cls, allow: str = "", deny: str = "", hosts: Iterable[str] = ()) -> UrlPolicy:
        """From the settings' comma-separated text. Raises ValueError naming a bad entry."""
        def split(text: str) -> tuple[str, ...]:
            return tuple(e.strip().lower() for e in text.split(",") if e.strip())
        return cls(split(allow), split(deny), tuple(h.strip().lower() for h in hosts if h.strip()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> UrlPolicy:
        try:
            return cls.parse(environ.get(ALLOW_ENV, ""), environ.get(DENY_ENV, ""))
        except ValueError as exc:
            raise ValueError(f"{ALLOW_ENV}/{DENY_ENV}: {exc}") from None

    def env(self) -> dict[str, str]:
        """The settings as environment variables, for the runners this process starts."""
        return {name: ",".join(value) for name, value in ((ALLOW_ENV, self.allow), (DENY_ENV, self.deny)) if value}

    def _listed(self, rules: tuple[tuple[str, Network | str], ...], host: str, address: Address | None) -> str | None:
        for entry, rule in rules:
            if isinstance(rule, str):
                if _host_matches(host, rule):
                    return entry
            elif address is not None and address.version == rule.version and address in rule:
                return entry
        return None


def url_refusal(url: str, policy: UrlPolicy, addresses: Iterable[str] | None = None) -> str | None:
    """None when `policy` lets a run call `url`, else why not (one sentence naming the rule).

    addresses: what the host resolved to; every one must be allowed. None: only the URL as written is
    judged (a host name is then judged by name; its addresses are checked where it is resolved)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in SCHEMES:
        return f"scheme '{parts.scheme}' is not allowed: only http and https"
    if not host:
        return "has no host"
    if policy.hosts and not any(_host_matches(host, pattern) for pattern in policy.hosts):
        return f"host '{host}' is not allowed here; allowed hosts: {', '.join(policy.hosts)}"
    literal = _address(host)
    if literal is None:
        entry = policy._listed(policy._denied, host, None)
        if entry:
            return f"host '{host}' is refused by {DENY_ENV} ({entry})"
        if policy._listed(policy._allowed, host, None):
            addresses = None  # a host the site allowed by name: its addresses are the site's business
        elif host in METADATA_HOSTS:
            return f"host '{host}' is a cloud metadata service; refused unless {ALLOW_ENV} lists it"
    checked = [literal] if literal is not None else [_address(a) for a in (addresses or ())]
    for address in checked:
        if address is None:
            continue
        if str(address) == host.strip("[]"):
            shown = str(address)
        else:  # another way to write the address, or what the name resolved to
            shown = f"'{host}' {'is' if literal is not None else 'resolves to'} {address}, which"
        entry = policy._listed(policy._denied, host, address)
        if entry:
            return f"{shown} is refused by {DENY_ENV} ({entry})"
        if policy._listed(policy._allowed, host, address):
            continue
        for network, why in DEFAULT_DENIED:
            if address.version == network.version and address in network:
                return f"{shown} is {why}; refused unless {ALLOW_ENV} lists it"
    return None


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, as a connection would use it)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


async def check_url(url: str, policy: UrlPolicy, resolver: Resolver = resolve, timeout: float = 5.0) -> str | None:
    """url_refusal on the URL and every address its host resolves to now. A host that does not resolve
    here is judged by name (it may resolve where the runner runs; the runner checks it there)."""
    refusal = url_refusal(url, policy)
    if refusal:
        return refusal
    parts = urlsplit(url.strip())
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await asyncio.wait_for(resolver(parts.hostname or "", port), timeout)
    except (OSError, TimeoutError, ValueError, UnicodeError):
        return None
    return url_refusal(url, policy, addresses)


__all__ = ["ALLOW_ENV", "DENY_ENV", "METADATA_HOSTS", "METADATA_LITERALS", "UrlPolicy", "UrlRefused", "check_url",
           "resolve", "url_refusal"]
