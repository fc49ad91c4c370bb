"""`flageval serve` as a subprocess, the way users run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from flageval.datasets import default_data_dir

DATA = default_data_dir()


@dataclass
class ShimProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path
    state_dir: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def launch_shim(state_dir: Path, log_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> ShimProcess:
    command = [sys.executable, "-m", "flageval.cli", "serve", "--port", "0", "--state-dir", str(state_dir), "--data-dir", str(DATA), *args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGEVAL_SHIM_")}
    environment.update(env or {})
    with open(log_path, "a") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("listening on "):
                url = line.split()[2]
                # uvicorn accepts connections a moment after the line
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                            return ShimProcess(proc, url, log_path, state_dir, list(args))
                    except httpx.HTTPError:
                        time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"flageval serve exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"flageval serve did not start in {timeout}s:\n{log_path.read_text(errors='replace')}")
