"""A one-request check that a service answers at all, so a wrong URL or key fails in a second
with a message naming the cause instead of after every sample's retries."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from flageval.engine.redact import redact_secret
from flageval.engine.types import Endpoint


async def probe(endpoint: Endpoint, timeout: float = 10.0) -> str | None:
    """None when the service answers; otherwise one line saying what is wrong."""
    body: dict = {"model": endpoint.model, "max_tokens": 1}
    if endpoint.kind == "chat":
        body["messages"] = [{"role": "user", "content": "Hi"}]
    else:
        body["prompt"] = "Hi"
    where = urlsplit(endpoint.url).netloc
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(endpoint.url, json=body, headers={"Authorization": f"Bearer {endpoint.api_key}"})
    except httpx.ConnectError as exc:
        return f"cannot connect to {where}: {exc or 'connection refused'}"
    except httpx.TimeoutException:
        return f"{where} did not answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return f"request to {endpoint.url} failed: {type(exc).__name__}: {exc}"
    if response.status_code in (401, 403):
        return f"{endpoint.url} refused the API key (HTTP {response.status_code})"
    if response.status_code in (404, 405):
        return (
            f"{endpoint.url} answered HTTP {response.status_code}: is the path right? "
            "(…/v1/chat/completions or …/v1/completions)"
        )
    if response.status_code == 400 and "model" in response.text.lower():
        return f"{endpoint.url} does not serve model '{endpoint.model}': {redact_secret(response.text[:200], endpoint.api_key)}"
    # 5xx and 429 are left to the engine's retries: a busy server is not a wrong configuration.
    return None
