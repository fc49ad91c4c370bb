"""`flageval serve`: FlagEval's REST API over local runs or, in a cluster, over Evaluation objects."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="flageval serve",
        description="Serve FlagEval Auto-Evaluation's REST API. Backend: local child processes, unless given a "
                    "kubeconfig or running in a cluster (then Evaluation objects).",
    )
    p.add_argument("--host", default=env("FLAGEVAL_SHIM_HOST", "127.0.0.1"), help="address to listen on (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=int(env("FLAGEVAL_SHIM_PORT", "8080")), help="0 picks a free port (printed on start)")
    p.add_argument("--token", default=env("FLAGEVAL_SHIM_TOKEN"), help="bearer token clients must send (or FLAGEVAL_SHIM_TOKEN)")
    p.add_argument("--token-file", type=Path, default=env("FLAGEVAL_SHIM_TOKEN_FILE"), help="read the token from this file")
    p.add_argument("--allow-host", action="append", default=None, metavar="HOST",
                   help="eval_url hosts evaluations may call (repeatable; '*.example.com' patterns; or FLAGEVAL_SHIM_ALLOW_HOSTS, comma-separated); "
                        "default: any host FLAGEVAL_URL_ALLOW / FLAGEVAL_URL_DENY let through (see flageval/api/urlpolicy.py)")
    p.add_argument("--max-body-bytes", type=int, default=int(env("FLAGEVAL_SHIM_MAX_BODY_BYTES", str(1 << 20))))
    p.add_argument("--rate-limit", type=float, default=float(env("FLAGEVAL_SHIM_RATE_LIMIT", "5000")),
                   help="requests a second per client address, beyond which it gets 429 (default 5000; 0: no limit)")
    p.add_argument("--rate-burst", type=int, default=int(env("FLAGEVAL_SHIM_RATE_BURST", "0")),
                   help="requests a client may send at once above the rate (default: one second's worth)")
    p.add_argument("--header-timeout", type=float, default=float(env("FLAGEVAL_SHIM_HEADER_TIMEOUT", "10")),
                   help="seconds a client has to send a request's headers; then it is disconnected (default 10)")
    p.add_argument("--body-timeout", type=float, default=float(env("FLAGEVAL_SHIM_BODY_TIMEOUT", "30")),
                   help="seconds a request's body may take to arrive; then 408 (default 30)")
    p.add_argument("--keep-alive-timeout", type=float, default=float(env("FLAGEVAL_SHIM_KEEP_ALIVE_TIMEOUT", "5")),
                   help="seconds an idle keep-alive connection is kept open (default 5)")
    p.add_argument("--tolerance", type=float, default=float(env("FLAGEVAL_SHIM_TOLERANCE", "0.5")), help="release tolerance in points (default 0.5)")
    p.add_argument("--backend", choices=("local", "kubernetes"), default=env("FLAGEVAL_SHIM_BACKEND"), help="default: kubernetes with --kubeconfig or in a cluster, else local")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig of the cluster whose Evaluations to serve")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most the first N samples of each dataset (smoke deployments)")
    p.add_argument("--results-path", default=env("FLAGEVAL_SHIM_RESULTS_PATH"),
                   help="kubernetes: where this server mounts the operator's results volume (its volumeMountPath), for /report/{request_id}")
    p.add_argument("--namespace", default=env("FLAGEVAL_SHIM_NAMESPACE"), help="namespace of the Evaluations (default: the pod's, else 'default')")
    local = p.add_argument_group("local backend")
    local.add_argument("--state-dir", type=Path, default=Path(env("FLAGEVAL_SHIM_STATE_DIR", str(Path.home() / ".local/state/flageval/serve"))),
                       help="requests, results, journals, logs and keys (default ~/.local/state/flageval/serve)")
    local.add_argument("--data-dir", type=Path, default=None, help="benchmark files (default: FLAGEVAL_DATA_DIR or ../shared/datasets)")
    local.add_argument("--parallel-datasets", type=int, default=int(env("FLAGEVAL_SHIM_PARALLEL_DATASETS", "2")), help="datasets of one service run at once (default 2)")
    local.add_argument("--max-runs", type=int, default=int(env("FLAGEVAL_SHIM_MAX_RUNS", "4")), help="runner processes at once; the rest wait in request order (default 4)")
    local.add_argument("--no-cache", action="store_true", help="do not share a response cache between runs")
    p.add_argument("--log-level", default=env("FLAGEVAL_SHIM_LOG_LEVEL", "info"), choices=("debug", "info", "warning", "error"))
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    return p


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


def _fail(message: str) -> int:
    print(f"flageval serve: error: {message}", file=sys.stderr)
    return 2


def _make_backend(args: argparse.Namespace):
    kind = args.backend or ("kubernetes" if args.kubeconfig or in_cluster() else "local")
    if kind == "kubernetes":
        from flageval.backends.kube import KubeBackend, KubeSettings

        return KubeBackend(KubeSettings(kubeconfig=args.kubeconfig, namespace=args.namespace, tolerance=args.tolerance, limit=args.limit,
                                        results_path=args.results_path))
    from flageval.backends.local import LocalBackend, LocalSettings

    return LocalBackend(LocalSettings(
        state_dir=args.state_dir, data_dir=args.data_dir, parallel_datasets=args.parallel_datasets,
        max_runs=args.max_runs, limit=args.limit, cache=not args.no_cache, tolerance=args.tolerance,
    ))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            return _fail(f"cannot read --token-file: {exc}")
    token = token or None
    if token is None and not is_loopback(args.host):
        return _fail(f"refusing to listen on {args.host} without a token: set --token (or FLAGEVAL_SHIM_TOKEN), or listen on 127.0.0.1")
    allow = args.allow_host if args.allow_host is not None else [h for h in os.environ.get("FLAGEVAL_SHIM_ALLOW_HOSTS", "").split(",") if h.strip()]
    from flageval.api.urlpolicy import ALLOW_ENV, DENY_ENV, UrlPolicy

    try:  # the local backend's runners read the same two variables from the environment they inherit
        url_policy = UrlPolicy.parse(os.environ.get(ALLOW_ENV, ""), os.environ.get(DENY_ENV, ""), allow)
    except ValueError as exc:
        return _fail(f"{ALLOW_ENV}/{DENY_ENV}/--allow-host: {exc}")
    for name, value, low in (("--parallel-datasets", args.parallel_datasets, 1), ("--max-runs", args.max_runs, 1),
                             ("--max-body-bytes", args.max_body_bytes, 1024), ("--rate-limit", args.rate_limit, 0),
                             ("--rate-burst", args.rate_burst, 0)):
        if value < low:
            return _fail(f"{name} must be at least {low}")
    for name, value in (("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout),
                        ("--keep-alive-timeout", args.keep_alive_timeout)):
        if value <= 0:
            return _fail(f"{name} must be a positive number of seconds")
    if args.limit is not None and args.limit < 1:
        return _fail("--limit must be a positive number of samples")
    if args.tolerance <= 0:
        return _fail("--tolerance must be positive")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from flageval.shim.app import create_app
    from flageval.shim.settings import ShimSettings

    try:
        backend = _make_backend(args)
    except Exception as exc:  # noqa: BLE001 - a bad kubeconfig or settings: one line
        return _fail(str(exc))
    settings = ShimSettings(token=token, url_policy=url_policy, max_body_bytes=args.max_body_bytes, tolerance=args.tolerance,
                            rate_limit=args.rate_limit, rate_burst=args.rate_burst, body_timeout=args.body_timeout)
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}")
    with contextlib.suppress(ImportError):  # uvloop, when installed, answers more requests per CPU second
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_serve(backend, create_app(backend, settings, open_backend=False), sock, args))


def _protocol_with_header_deadline(seconds: float) -> Any:
    """uvicorn's HTTP protocol, plus a deadline for each request's headers: uvicorn times out idle
    keep-alive connections but waits for ever on a client that connects and sends its headers a byte at a
    time, each such client holding a connection."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is in the shim extra; without it, h11 and no header deadline
        return "h11"

    class HeaderDeadlineProtocol(Base):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._deadline = self.loop.call_later(seconds, self._headers_too_slow)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # the next request on a kept-alive connection
                self._deadline = self.loop.call_later(seconds, self._headers_too_slow)

        def on_headers_complete(self) -> None:
            self._cancel_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _serve(backend, app, sock: socket.socket, args: argparse.Namespace) -> int:
    import uvicorn

    from flageval.backends.base import BackendError

    try:
        await backend.open()
    except BackendError as exc:
        return _fail(str(exc))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{port} (backend: {backend.name})", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=not args.no_access_log, lifespan="on",
                            timeout_graceful_shutdown=5, log_config=None, timeout_keep_alive=args.keep_alive_timeout,
                            http=_protocol_with_header_deadline(args.header_timeout))
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        await backend.aclose()  # already done on a normal shutdown (the app's lifespan); here for a failed start
    return 0


if __name__ == "__main__":
    sys.exit(main())
