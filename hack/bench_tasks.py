#!/usr/bin/env python3
"""lm-eval tasks benchmark: flageval and lm-eval 0.4.13 on the same tasks, against the same reference
model, in one run, each in its own process.

    .venv/bin/python hack/bench_tasks.py [--concurrency 64] [--limit N] [--repeat K]

Per task (bbh_cot_fewshot over chat: 6,511 prompts; hellaswag over completions: 10,042 × 4
loglikelihood requests): process start → the first of the task's requests the model receives (flageval's
one-token probe of the endpoint, sent before, does not count), the task's requests per second from its
first to its last, the time from start to exit (results written), the client's peak RSS and CPU, and
the reference model's share of a core while the requests came (near 1: it would be the bottleneck), and
the machine's load average (other work on the same cores makes the figures of that run incomparable).

Both read the same local data (lm-eval through flageval's offline loader: it would otherwise go to a
hub). lm-eval runs with its own TaskManager (it scans every task file at start). lm-eval counts a
loglikelihood context in tokens and needs a tokenizer; none can be downloaded here, so it is given a
byte-level tiktoken encoding built in its process: its requests are the same, its scores are not
meaningful (only its speed is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TASKS = {"bbh_cot_fewshot": "chat", "hellaswag": "completions"}

LM_EVAL = r"""
import sys, os
task, url, concurrency, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from flageval.datasets import default_data_dir
from flageval.datasets.lmeval.offline import local_data
import lm_eval
from lm_eval.tasks import TaskManager
chat = url.endswith("chat/completions")
args = {"base_url": url, "model": "m", "num_concurrent": concurrency, "max_retries": 3}
if chat:
    model = "local-chat-completions"
else:
    import tiktoken
    byte_level = tiktoken.Encoding("bytes", pat_str=r"[\s\S]", mergeable_ranks={bytes([i]): i for i in range(256)},
                                   special_tokens={"<|endoftext|>": 256})
    tiktoken.encoding_for_model = lambda name: byte_level
    model = "local-completions"
    args.update(tokenizer_backend="tiktoken", tokenized_requests=False, batch_size=1)
with local_data(default_data_dir()):
    lm_eval.simple_evaluate(model=model, model_args=args, tasks=[task], apply_chat_template=chat,
                            limit=int(limit) if limit != "none" else None, task_manager=TaskManager(),
                            bootstrap_iters=0)
"""


# The reference model, which also notes when it first answers a request of a task it learnt (the probe,
# "Hi", is no task's).
MOCK = r"""
import asyncio, sys, time
from flageval.mock_model import server

class Server(server.MockModelServer):
    def stats(self):
        return {**super().stats(), "first_task_request_time": self.answerer.first_task_request_time}

    def reset_stats(self):
        super().reset_stats()
        self.answerer.first_task_request_time = None

class Noting:
    def __init__(self, answerer):
        self.answerer, self.first_task_request_time = answerer, None

    def _note(self, answer):
        if self.first_task_request_time is None and answer[0] != "unknown":
            self.first_task_request_time = time.time()
        return answer

    def chat(self, messages, body):
        return self._note(self.answerer.chat(messages, body))

    def completion(self, prompt, body):
        return self._note(self.answerer.completion(prompt, body))

args = server.build_parser().parse_args(sys.argv[1:])
answerer = Noting(server.make_answerer(args))
asyncio.run(server._serve_forever(Server(answerer, server.options_from_args(args)), args.host, args.port))
"""


def stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/stats", timeout=30) as response:
        return json.load(response)


def reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{base}/stats/reset", data=b"", method="POST"), timeout=30).close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], base: str, env: dict, mock_pid: int) -> dict:
    """Spawn, wait, and read the mock's first and last request times, the child's peak RSS and CPU, and
    the share of one core the reference model used from the first request to the last (near 1.0: it was
    the bottleneck)."""
    reset(base)
    mock_cpu = cpu_seconds(mock_pid)
    started = time.time()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    seen = stats(base)
    if process.returncode != 0 or not seen["first_task_request_time"]:
        raise SystemExit(f"{cmd[:6]} failed ({process.returncode}):\n{err[-3000:]}")
    first = seen["first_task_request_time"]
    requests = seen["total"] - seen["by_key"].get("unknown", 0)
    span = max(1e-9, seen["last_request_time"] - first)
    mock_cpu = cpu_seconds(mock_pid) - mock_cpu  # it works only while requests come
    return {"first_request_s": first - started, "wall_s": wall, "requests": requests, "requests_per_s": requests / span,
            "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "model_cpu_ms_per_request": 1000 * mock_cpu / max(1, requests), "model_core_share": mock_cpu / span,
            "load_average_1m": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per client, interleaved; the table keeps each client's best (a shared machine)")
    args = parser.parse_args()
    names = args.tasks.split(",")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    mock_cmd = [PYTHON, "-c", MOCK, "--port", "0", "--tasks", ",".join(names)]
    if args.limit:
        mock_cmd += ["--tasks-limit", str(args.limit)]
    mock = subprocess.Popen(mock_cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = mock.stdout.readline()  # it learns the tasks first: minutes for the full ones
        if not line.startswith("listening on "):
            raise SystemExit(f"the reference model did not start: {line!r}")
        base = line.split()[-1]
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                url = f"{base}/v1/chat/completions" if TASKS.get(name, "chat") == "chat" else f"{base}/v1/completions"
                theirs = [PYTHON, "-c", LM_EVAL, name, url, str(args.concurrency), str(args.limit or "none")]
                best: dict[str, dict] = {}
                for attempt in range(args.repeat):  # interleaved; the best of each client's runs is kept
                    ours = [PYTHON, "-m", "flageval.cli", "eval", "--url", url, "--model", "m", "--datasets", name,
                            "--no-cache", "--output", f"{tmp}/{name}-{attempt}", "--num-concurrent",
                            str(args.concurrency), "--json"]
                    if args.limit:
                        ours += ["--limit", str(args.limit)]
                    for client, cmd in (("flageval", ours), ("lm-eval 0.4.13", theirs)):
                        result = measure(cmd, base, env, mock.pid)
                        print(json.dumps({"task": name, "client": client, "run": attempt + 1, **result}), flush=True)
                        if client not in best or result["requests_per_s"] > best[client]["requests_per_s"]:
                            best[client] = result
                rows += [(name, client, result) for client, result in best.items()]
        print()
        print("| task | client | requests | process start → first request | requests/s | start → exit | peak RSS "
              "| client CPU | model's share of a core | load average after |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, client, r in rows:
            print(f"| {name} | {client} | {r['requests']:,} | {r['first_request_s']:.2f} s | "
                  f"{r['requests_per_s']:,.0f} | {r['wall_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | {r['cpu_s']:.1f} s | "
                  f"{r['model_core_share']:.2f} | {r['load_average_1m']:.1f} |")
        for name in names:
            ours_r = next(r for n, c, r in rows if n == name and c == "flageval")
            theirs_r = next(r for n, c, r in rows if n == name and c != "flageval")
            print(f"{name}: flageval {ours_r['requests_per_s'] / theirs_r['requests_per_s']:.2f}× lm-eval's requests/s")
    finally:
        mock.terminate()
        mock.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
