"""Connections to an endpoint only to addresses the URL policy allows, checked on the addresses
actually connected to: the host is resolved once here and the connection goes to a checked address,
so a name that resolves differently between a check and the connection (DNS rebinding) gains nothing."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from flageval.api.urlpolicy import Resolver, UrlPolicy, UrlRefused, resolve, url_refusal


async def checked_addresses(url: str, host: str, port: int, policy: UrlPolicy, resolver: Resolver | None = None) -> list[str]:
    """Every address `host` resolves to, once all are allowed; raises UrlRefused naming the rule."""
    addresses = await (resolver or resolve)(host, port)
    refusal = url_refusal(url, policy, addresses)
    if refusal:
        raise UrlRefused(f"{url}: {refusal}")
    return list(dict.fromkeys(addresses))


async def connect_checked(factory: Any, url: str, host: str, port: int, sslcontext: ssl.SSLContext | None,
                          policy: UrlPolicy, resolver: Resolver | None = None) -> tuple[Any, Any]:
    """loop.create_connection to the first checked address that answers (TLS still verifies `host`)."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for address in await checked_addresses(url, host, port, policy, resolver):
        try:
            return await loop.create_connection(factory, address, port, ssl=sslcontext,
                                                server_hostname=host.strip("[]") if sslcontext else None)
        except OSError as exc:
            error = exc
    raise error or OSError(f"{host} resolves to no address")
