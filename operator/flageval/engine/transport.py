"""How request bytes reach an endpoint: a lean HTTP/1.1 keep-alive client, or any httpx.AsyncClient.

httpx spends about 0.25 ms of CPU per request in its client layer alone, and httpcore's pool scans
every connection on every request (1 ms and more at 64 connections), which caps an evaluation at a
few hundred requests per second. The engine posts the same JSON body to the same URL over and over,
so `LeanTransport` does only that: one write per request, answers framed by httptools (llhttp, the
parser uvicorn and Node use), one connection per in-flight request, reused. It is used for direct http(s)
endpoints; when a proxy applies (HTTP_PROXY/HTTPS_PROXY/NO_PROXY) or the caller passes its own
httpx.AsyncClient, requests go through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools
import httpx

from flageval.api.urlpolicy import Resolver, UrlPolicy, UrlRefused
from flageval.engine.egress import checked_addresses, connect_checked


class TransportError(Exception):
    """The request got no complete HTTP answer: refused, reset, closed early, unparseable framing."""


class TransportTimeout(TransportError):
    """No complete answer within the attempt's timeout."""


class AddressRefused(TransportError):
    """The URL policy refuses the address the endpoint's host resolves to: no attempt can succeed."""


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Transport(Protocol):
    async def post(self, payload: bytes, headers: dict[str, str], timeout: float) -> RawResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    """Requests through an httpx.AsyncClient (closed here only when `owned`)."""

    def __init__(self, url: str, client: httpx.AsyncClient, *, owned: bool = False,
                 policy: UrlPolicy | None = None, resolver: Resolver | None = None) -> None:
        self.url = url
        self.client = client
        self.owned = owned
        self.policy, self.resolver = policy, resolver

    async def post(self, payload: bytes, headers: dict[str, str], timeout: float) -> RawResponse:
        if self.policy is not None:
            # httpx (or the proxy) resolves the name again: this check is as good as a check can be
            # from here; the direct path (LeanTransport) connects to the checked address itself.
            parts = urlsplit(self.url)
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                await checked_addresses(self.url, parts.hostname or "", port, self.policy, self.resolver)
            except UrlRefused as error:
                raise AddressRefused(str(error)) from None
            except OSError:
                pass  # not resolvable here (a proxy may resolve it): the request says what happens
        try:
            response = await self.client.post(self.url, content=payload, headers=headers, timeout=timeout)
        except httpx.TimeoutException as error:
            raise TransportTimeout(str(error) or type(error).__name__) from error
        except httpx.TransportError as error:
            raise TransportError(f"{type(error).__name__}: {error or 'connection closed'}") from error
        return RawResponse(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                           response.content)

    async def aclose(self) -> None:
        if self.owned:
            await self.client.aclose()


def proxy_applies(url: str) -> bool:
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


_MAX_HEAD = 64 * 1024
# Servers drop idle keep-alive connections (uvicorn, so vLLM and SGLang: after 5 s); a request sent
# on one just as it closes fails for nothing, so connections idle this long are not reused.
IDLE_REUSE_SECONDS = 4.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; httptools frames the answers.

    Only POSTs are sent: no answer is to a HEAD request, the one case llhttp cannot frame by itself."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[RawResponse] | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        # the current answer
        self.received = False
        self.head_bytes = 0
        self.head_done = False
        self.interim = False
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.head_done and self._ends_with_close():
                waiter.set_result(RawResponse(self.parser.get_status_code(), self.headers, b"".join(self.body)))
            else:
                detail = f"{type(exc).__name__}: {exc}" if exc else "server closed the connection"
                got = "mid-answer" if self.received else "before answering"
                waiter.set_exception(TransportError(f"{detail} ({got})"))

    def _ends_with_close(self) -> bool:
        """No Content-Length and no chunked coding: the body runs to the end of the connection."""
        headers = self.headers
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()

    def send(self, data: bytes) -> asyncio.Future[RawResponse]:
        assert self.transport is not None
        self.received = False
        self.head_bytes = 0
        self.head_done = False
        self.headers = {}
        self.body = []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            if not waiter.done():
                detail = str(error) if isinstance(error, httptools.HttpParserError) else "switched protocols"
                waiter.set_exception(TransportError(f"not a valid HTTP/1.1 answer: {detail}"))
            self.abort()  # after a complete answer: trailing garbage, the connection is out of step
            return
        if self.waiter is None:  # answered
            if not self.reusable:
                self.abort()
        elif not self.head_done:
            # httptools keeps an unfinished header in memory however long it grows: bound the head here.
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                waiter.set_exception(TransportError(f"answer head larger than {_MAX_HEAD} bytes"))
                self.abort()

    # -- httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second answer to one request: the connection is out of step
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.interim = 100 <= self.parser.get_status_code() < 200
        self.head_done = not self.interim
        if self.head_done and not self.parser.should_keep_alive():  # Connection: close, HTTP/1.0, body up to EOF
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:  # 100 Continue and the like: the real answer follows
            self.headers = {}
            return
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(RawResponse(self.parser.get_status_code(), self.headers, b"".join(self.body)))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class LeanTransport:
    """POSTs to one URL over up to `max_connections` reused HTTP/1.1 connections."""

    def __init__(self, url: str, max_connections: int, *, ssl_context: ssl.SSLContext | None = None,
                 policy: UrlPolicy | None = None, resolver: Resolver | None = None) -> None:
        parts = urlsplit(url)
        self.url, self.policy, self.resolver = url, policy, resolver
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or httpx.create_ssl_context()) if parts.scheme == "https" else None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host_header = host if default_port else f"{host}:{self.port}"
        self._head_prefix = f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: flageval\r\naccept: application/json\r\n"
        self._headers_for: dict[str, str] | None = None
        self._head = self._head_prefix
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._all: set[_Connection] = set()
        self._closed = False

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        if self.policy is not None:
            opening = connect_checked(_Connection, self.url, self.host, self.port, self.ssl, self.policy, self.resolver)
        else:
            opening = loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        try:
            _, connection = await asyncio.wait_for(opening, timeout)
        except UrlRefused as error:
            raise AddressRefused(str(error)) from None
        except TimeoutError:
            raise TransportTimeout(f"connecting to {self.host}:{self.port} took over {timeout:.3g}s") from None
        except OSError as error:
            raise TransportError(f"{type(error).__name__}: {error}") from None
        return connection

    async def post(self, payload: bytes, headers: dict[str, str], timeout: float) -> RawResponse:
        if self._closed:
            raise TransportError("transport closed")
        if headers is not self._headers_for:  # the same dict comes with every request of a run
            self._headers_for = headers
            self._head = self._head_prefix + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = f"{self._head}content-length: {len(payload)}\r\n\r\n".encode() + payload
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._slots:
            connection = None
            now = loop.time()
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed and now - candidate.idle_since < IDLE_REUSE_SECONDS:
                    connection = candidate
                    break
                candidate.abort()
                self._all.discard(candidate)
            if connection is None:
                connection = await self._connect(max(0.001, deadline - loop.time()))
                self._all.add(connection)
            waiter = connection.send(data)
            timer = loop.call_at(deadline, _expire, waiter, timeout)
            try:
                response = await waiter
            except BaseException:
                # Timed out, failed or cancelled mid-request: the connection's state is unknown.
                connection.abort()
                self._all.discard(connection)
                raise
            finally:
                timer.cancel()
            if connection.closed or not connection.reusable:
                connection.abort()
                self._all.discard(connection)
            else:
                connection.idle_since = loop.time()
                self._idle.append(connection)
            return response

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._all):
            if connection.transport is not None:
                connection.transport.close()
        self._all.clear()
        self._idle.clear()


def _expire(waiter: asyncio.Future[RawResponse], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TransportTimeout(f"no answer within {timeout:.3g}s"))


def build_transport(url: str, max_connections: int, request_timeout: float,
                    client: httpx.AsyncClient | None = None, policy: UrlPolicy | None = None) -> Transport:
    """policy: every connection's address is checked against it (None: no check)."""
    if client is not None:
        return HttpxTransport(url, client, policy=policy)
    if proxy_applies(url):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return HttpxTransport(url, httpx.AsyncClient(limits=limits, timeout=request_timeout), owned=True, policy=policy)
    return LeanTransport(url, max_connections, policy=policy)
