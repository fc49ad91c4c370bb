#!/usr/bin/env python3
"""REST API benchmark: N concurrent clients polling POST /evaluation_progress while evaluations run.

    .venv/bin/python hack/bench_shim.py [--clients 50] [--duration 20] [--evaluations 4] [--serve-arg=--no-access-log]

Starts the reference model (every answer delayed by --latency), `flageval serve` on the local backend
(default settings, a fresh state directory) and --evaluations evaluations of one service each
(gsm8k + mmlu, which keep their runner processes busy for the whole measurement). Then each client
holds one keep-alive connection and polls the progress of a random running evaluation as fast as it
is answered, for --duration seconds; then, as the peer, the same clients poll GET /healthz of the same
server for as long (the web stack's floor, with no evaluation to look up). Clients are raw HTTP/1.1 on asyncio in this process, so that the
client library is not what is measured. Prints one table: requests/s and latency percentiles; every
answer is checked (HTTP 200, err_code 0, status R).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))


def start(command: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("listening on "):
                return proc, line.split()[2]
        if proc.poll() is not None:
            raise SystemExit(f"{command[3]} exited: {log.read_text()}")
        time.sleep(0.05)
    raise SystemExit(f"{command[3]} did not start")


async def client(host: str, port: int, ids: list[str] | None, until: float, latencies: list[float], failures: list[str]) -> None:
    """Poll as fast as answered on one keep-alive connection: POST /evaluation_progress of a random id,
    or, with ids None (the peer), GET /healthz — the same server stack with no evaluation to look up."""
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random()
    try:
        while time.perf_counter() < until:
            if ids is None:
                request = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            else:
                body = orjson.dumps({"request_id": rng.choice(ids), "domain": "NLP"})
                request = (f"POST /evaluation_progress HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            answer = orjson.loads(payload)
            ok = answer.get("status") == "ok" if ids is None else answer.get("err_code") == 0 and answer.get("status") == "R"
            if not status_line.startswith(b"HTTP/1.1 200") or not ok:
                failures.append(f"{status_line.strip().decode()} {answer}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of polling")
    parser.add_argument("--evaluations", type=int, default=4, help="evaluations running meanwhile (one service each)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the reference model takes per answer")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `flageval serve` argument (repeatable)")
    parser.add_argument("--data-dir", default=os.environ.get("FLAGEVAL_DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    args = parser.parse_args()

    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mock, model_url = start([python, "-m", "flageval.cli", "mock-model", "--port", "0", "--data-dir", args.data_dir,
                                 "--latency", str(args.latency)], tmp_path / "mock.log")
        shim, shim_url = start([python, "-m", "flageval.cli", "serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
                                "--data-dir", args.data_dir, "--max-runs", str(2 * args.evaluations), *args.serve_arg],
                               tmp_path / "serve.log")
        try:
            ids = []
            for i in range(args.evaluations):
                info = {"eval_model": f"bench-{i}", "model": "qwen", "eval_url": f"{model_url}/v1/chat/completions", "num_concurrent": 4}
                answer = httpx.post(f"{shim_url}/evaluation", json={"eval_infos": [info], "domain": "NLP"}, timeout=30).json()
                assert answer["err_code"] == 0, answer
                ids.append(answer["request_id"])
            # every evaluation running before the clock starts
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [httpx.post(f"{shim_url}/evaluation_progress", json={"request_id": r}, timeout=30).json()["status"] for r in ids]
                if all(s == "R" for s in states):
                    break
                time.sleep(0.2)
            host, port = shim_url.removeprefix("http://").rsplit(":", 1)

            def measure(poll_ids: list[str] | None) -> dict:
                latencies: list[float] = []
                failures: list[str] = []

                async def run() -> float:
                    until = time.perf_counter() + args.duration
                    began = time.perf_counter()
                    await asyncio.gather(*(client(host, int(port), poll_ids, until, latencies, failures) for _ in range(args.clients)))
                    return time.perf_counter() - began

                cpu_before = cpu_seconds(shim.pid)
                elapsed = asyncio.run(run())
                return {"ms": [x * 1000 for x in latencies], "failures": failures, "elapsed": elapsed,
                        "cpu": cpu_seconds(shim.pid) - cpu_before, "load": os.getloadavg()[0]}

            progress = measure(ids)
            peer = measure(None)
            after = [httpx.post(f"{shim_url}/evaluation_progress", json={"request_id": r}, timeout=30).json() for r in ids]
        finally:
            shim.terminate()
            mock.terminate()
            shim.wait(60)
            mock.wait(10)

    def figures(m: dict) -> list[str]:
        ms, elapsed = m["ms"], m["elapsed"]
        return [f"{elapsed:.1f} s", f"{len(ms)}", f"{len(ms) / elapsed:.0f}", f"{statistics.median(ms):.1f} ms",
                f"{percentile(ms, 90):.1f} ms", f"{percentile(ms, 99):.1f} ms", f"{max(ms):.1f} ms",
                f"{1000 * m['cpu'] / max(1, len(ms)):.2f} s", f"{m['load']:.1f}", f"{len(m['failures'])}"]

    names = ["duration", "requests", "requests/s", "latency p50", "latency p90", "latency p99", "latency max",
             "server CPU per 1000 requests", "load average (1 min)", "failed answers"]
    rows = list(zip(names, figures(progress), figures(peer)))
    width = max(len(k) for k in names)
    print(f"{args.clients} clients; {args.evaluations} evaluations running meanwhile (runner processes: {2 * args.evaluations})\n")
    print(f"| {'measure':<{width}} | POST /evaluation_progress | peer: GET /healthz, same server |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for key, value, floor in rows:
        print(f"| {key:<{width}} | {value} | {floor} |")
    print("\nprogress at the end: " + ", ".join(a["running_progress"] or a["status"] for a in after))
    print(f"command: {' '.join([Path(sys.executable).name, 'hack/bench_shim.py', *sys.argv[1:]])}; cpus: {os.cpu_count()}")
    failures = progress["failures"] + peer["failures"]
    if failures:
        print("first failure:", failures[0][:300])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
