"""Which eval_url a run may call (api/urlpolicy.py), the connect-time check on the address actually
connected to (engine/egress.py through the transports), and the API key kept out of recorded errors."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from flageval.api.urlpolicy import UrlPolicy, check_url, url_refusal
from flageval.engine import Endpoint
from flageval.engine.client import EndpointClient, SampleFailed, chat_choice
from flageval.engine.redact import REDACTED, redact_secret
from flageval.engine.transport import AddressRefused, HttpxTransport, LeanTransport
from flageval.mock_model.server import FaultPlan, serve_in_thread
from support.engine_helpers import FAST, chat_items, run

DEFAULT = UrlPolicy()


@pytest.mark.parametrize(("url", "rule"), [
    ("ftp://models.example/v1/chat/completions", "scheme 'ftp' is not allowed: only http and https"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local (cloud metadata services answer at 169.254.169.254)"),
    ("http://169.254.10.1:9010/v1/chat/completions", "169.254.10.1 is link-local"),
    ("http://[fe80::1%25eth0]:9010/v1/completions", "link-local"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "the AWS metadata service (IPv6)"),
    ("http://100.100.100.200/latest/meta-data/", "Alibaba Cloud metadata service"),
    ("http://[::ffff:169.254.169.254]/", "'::ffff:169.254.169.254' is 169.254.169.254, which is link-local"),  # IPv4-mapped
    ("http://2852039166/", "'2852039166' is 169.254.169.254, which is link-local"),  # the same address as one number
    ("http://0xa9fea9fe/", "is 169.254.169.254, which is link-local"),
    ("http://0251.0376.0251.0376/", "is 169.254.169.254, which is link-local"),  # octal
    ("http://metadata.google.internal/computeMetadata/v1/", "host 'metadata.google.internal' is a cloud metadata service"),
    ("http://METADATA.Google.Internal./computeMetadata/v1/", "host 'metadata.google.internal' is a cloud metadata service"),
    ("http://0.0.0.0:9010/v1/chat/completions", "0.0.0.0 is unspecified"),
    ("http:///v1/chat/completions", "has no host"),
])
def test_refused_by_default_with_the_rule_named(url, rule):
    refusal = url_refusal(url, DEFAULT)
    assert refusal is not None and rule in refusal, refusal


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9010/v1/chat/completions",   # loopback: the local reference model
    "http://localhost:9010/v1/completions",
    "http://[::1]:9010/v1/completions",
    "https://api.example.com/v1/chat/completions",
    "http://10.0.3.7:8000/v1/chat/completions",
    "http://qwen.models.svc.cluster.local:9010/v1/chat/completions",
])
def test_allowed_by_default(url):
    assert url_refusal(url, DEFAULT) is None


def test_every_resolved_address_is_judged():
    url = "http://model.example:9010/v1/chat/completions"
    assert url_refusal(url, DEFAULT, ["10.0.0.5"]) is None
    refusal = url_refusal(url, DEFAULT, ["10.0.0.5", "169.254.169.254"])
    assert refusal == ("'model.example' resolves to 169.254.169.254, which is link-local (cloud metadata services answer "
                       "at 169.254.169.254); refused unless FLAGEVAL_URL_ALLOW lists it")
    assert "resolves to fe80::" in url_refusal(url, DEFAULT, ["fe80::a:b"])


def test_allow_lifts_the_default_and_deny_wins():
    allow = UrlPolicy.parse(allow="169.254.10.0/24, models.link.local")
    assert url_refusal("http://169.254.10.5:9010/v1/completions", allow) is None
    assert "link-local" in url_refusal("http://169.254.169.254/", allow)  # outside the allowed CIDR
    assert url_refusal("http://models.link.local:9010/v1/completions", allow, ["169.254.99.1"]) is None  # allowed by name
    deny = UrlPolicy.parse(allow="127.0.0.1", deny="127.0.0.0/8,::1,*.internal.example")
    assert url_refusal("http://127.0.0.1:9/", deny) == "127.0.0.1 is refused by FLAGEVAL_URL_DENY (127.0.0.0/8)"
    assert url_refusal("http://[::1]:9/", deny) == "::1 is refused by FLAGEVAL_URL_DENY (::1)"
    assert url_refusal("http://a.internal.example/", deny) == "host 'a.internal.example' is refused by FLAGEVAL_URL_DENY (*.internal.example)"
    assert url_refusal("http://localhost:9/", deny) is None  # by name: the address is judged where it is resolved
    assert url_refusal("http://localhost:9/", deny, ["127.0.0.1"]) == ("'localhost' resolves to 127.0.0.1, which is refused by "
                                                                      "FLAGEVAL_URL_DENY (127.0.0.0/8)")


def test_allowed_hosts_only():
    only = UrlPolicy.parse(hosts=["models.example", "*.gpu.example"])
    assert url_refusal("http://models.example/v1/completions", only) is None
    assert url_refusal("http://a.gpu.example/v1/completions", only) is None
    assert url_refusal("http://other.example/v1/completions", only) == ("host 'other.example' is not allowed here; allowed hosts: "
                                                                        "models.example, *.gpu.example")


def test_settings_are_checked_and_passed_on():
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a CIDR"):
        UrlPolicy.parse(allow="10.0.0.0/33")
    with pytest.raises(ValueError, match="FLAGEVAL_URL_ALLOW/FLAGEVAL_URL_DENY: '1.2.3.4/40' is not a CIDR"):
        UrlPolicy.from_env({"FLAGEVAL_URL_DENY": "1.2.3.4/40"})
    policy = UrlPolicy.from_env({"FLAGEVAL_URL_ALLOW": "169.254.1.0/24", "FLAGEVAL_URL_DENY": "127.0.0.0/8, ::1"})
    assert policy.env() == {"FLAGEVAL_URL_ALLOW": "169.254.1.0/24", "FLAGEVAL_URL_DENY": "127.0.0.0/8,::1"}
    assert UrlPolicy.from_env({}).env() == {}


def resolver_of(*answers: list[str]):
    """A resolver answering each call with the next list (the last one repeats), counting the calls."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return resolve, calls


def test_check_url_resolves_and_judges_every_address():
    resolve, calls = resolver_of(["10.1.1.1", "169.254.169.254"])
    refusal = asyncio.run(check_url("http://model.example:9010/v1/completions", DEFAULT, resolve))
    assert calls == ["model.example"] and "resolves to 169.254.169.254" in refusal

    async def unresolvable(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    # Judged by name here; the runner resolves it where it runs and checks again.
    assert asyncio.run(check_url("http://model.example/v1/completions", DEFAULT, unresolvable)) is None


CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}]}).encode()


def test_transport_connects_to_the_address_it_checked():
    """The name is resolved by the policy's resolver only (the system cannot resolve it): the connection
    goes to that checked address, never to a second resolution."""
    with serve_in_thread() as mock:
        port = int(mock.rsplit(":", 1)[1])
        resolve, calls = resolver_of(["127.0.0.1"])

        async def go():
            transport = LeanTransport(f"http://model.invalid:{port}/v1/chat/completions", 2, policy=DEFAULT, resolver=resolve)
            try:
                return await transport.post(CHAT, {"content-type": "application/json"}, 5)
            finally:
                await transport.aclose()

        response = asyncio.run(go())
        assert response.status == 200 and calls == ["model.invalid"] and mock.stats()["total"] == 1


def test_a_name_that_rebinds_after_the_check_is_refused_at_connect():
    """First answer (the runner's check before the run): an allowed address; every later one (the
    connection): the metadata address. Nothing reaches any server."""
    with serve_in_thread() as mock:
        port = int(mock.rsplit(":", 1)[1])
        url = f"http://rebind.invalid:{port}/v1/chat/completions"
        resolve, calls = resolver_of(["127.0.0.1"], ["169.254.169.254"])

        async def go():
            assert await check_url(url, DEFAULT, resolve) is None
            transport = LeanTransport(url, 2, policy=DEFAULT, resolver=resolve)
            try:
                with pytest.raises(AddressRefused, match=r"'rebind.invalid' resolves to 169.254.169.254, which is link-local"):
                    await transport.post(CHAT, {}, 5)
            finally:
                await transport.aclose()

        asyncio.run(go())
        assert calls == ["rebind.invalid", "rebind.invalid"] and mock.stats()["total"] == 0


def test_one_refused_address_refuses_the_name():
    with serve_in_thread() as mock:
        port = int(mock.rsplit(":", 1)[1])
        resolve, _ = resolver_of(["127.0.0.1", "fe80::1"])

        async def go():
            transport = LeanTransport(f"http://two.invalid:{port}/v1/chat/completions", 1, policy=DEFAULT, resolver=resolve)
            with pytest.raises(AddressRefused, match="resolves to fe80::1, which is link-local"):
                await transport.post(CHAT, {}, 5)

        asyncio.run(go())
        assert mock.stats()["total"] == 0


def test_httpx_path_checks_before_each_request():
    with serve_in_thread() as mock:
        port = int(mock.rsplit(":", 1)[1])
        resolve, calls = resolver_of(["127.0.0.1"], ["169.254.169.254"])
        url = f"http://localhost:{port}/v1/chat/completions"

        async def go():
            async with httpx.AsyncClient() as client:
                transport = HttpxTransport(url, client, policy=DEFAULT, resolver=resolve)
                assert (await transport.post(CHAT, {"content-type": "application/json"}, 5)).status == 200
                with pytest.raises(AddressRefused, match="link-local"):
                    await transport.post(CHAT, {"content-type": "application/json"}, 5)

        asyncio.run(go())
        assert len(calls) == 2 and mock.stats()["total"] == 1


def test_a_refused_address_fails_each_sample_once_without_retries(tmp_path):
    """Every sample fails with the rule, at the first attempt (retrying cannot help), nothing sent."""
    with serve_in_thread() as mock:
        url = mock.chat_url.replace("127.0.0.1", "localhost")
        endpoint = Endpoint(url=url, model="m", num_retry=10, url_policy=UrlPolicy.parse(deny="127.0.0.0/8,::1"))
        _, records = run(endpoint, chat_items(5), tmp_path)
        assert mock.stats()["total"] == 0 and len(records) == 5
        assert all(r.error is not None and "refused by FLAGEVAL_URL_DENY" in r.error for r in records), records[0].error
        assert "'localhost' resolves to" in records[0].error


# -- the API key in errors ---------------------------------------------------------------------------

def test_redact_secret_forms():
    key = 'sk-"odd\\key/é'
    body = json.dumps({"error": f"bad key Bearer {key}"})
    assert key not in redact_secret(body, key) and json.dumps(key)[1:-1] not in redact_secret(body, key)
    assert redact_secret(f"x {key} y", key) == f"x {REDACTED} y"
    assert redact_secret("EMPTY stays", "EMPTY") == "EMPTY stays"


def post_once(url: str, key: str) -> str:
    async def go() -> str:
        transport = LeanTransport(url, 1)
        client = EndpointClient(Endpoint(url=url, model="m", api_key=key, num_retry=1), transport, FAST)
        try:
            await client.post(CHAT, float("inf"), chat_choice)
        except SampleFailed as failed:
            return str(failed)
        finally:
            await transport.aclose()
        raise AssertionError("the request did not fail")

    return asyncio.run(go())


UNIQUE = uuid.uuid4().hex


@pytest.mark.parametrize("key", [f"sk-{UNIQUE}", f'sk-"{UNIQUE}\\', f"sk-{'x' * 150}{UNIQUE}{UNIQUE}"],
                         ids=["plain", "json-escaped", "cut-by-the-excerpt"])
def test_an_endpoint_quoting_the_authorization_header_does_not_put_the_key_in_errors(key):
    """A 500 whose body quotes the header: the error keeps the status and the body, not the key."""
    with serve_in_thread(faults=FaultPlan({"500": 1.0}), echo_auth=True) as mock:
        message = post_once(mock.chat_url, key)
    assert "HTTP 500 from" in message and "request had Authorization: Bearer [redacted]" in message, message
    assert UNIQUE[:8] not in message and "x" * 20 not in message, message


def test_a_refused_key_quoted_back_is_hidden():
    key = f"sk-wrong-{UNIQUE}"
    with serve_in_thread(api_key="sk-right", echo_auth=True) as mock:
        message = post_once(mock.chat_url, key)
    assert message.startswith("HTTP 401") and UNIQUE[:8] not in message and REDACTED in message, message
