"""Starts qnet services as real processes for tests, on port 0, reads their bound ports and their metrics, and
waits for what they do."""

from __future__ import annotations

import asyncio
import inspect
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
READY = re.compile(r"QNET_READY service=(\S+) (?:grpc|http)=(\S+) metrics=(\S+)")


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    address: str
    metrics: str
    log_path: pathlib.Path

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start(module: str, name: str, log_dir: pathlib.Path, env: dict[str, str], timeout: float = 120) -> Service:
    full = dict(os.environ)
    full.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen'}", QNET_GRPC_PORT="0", QNET_METRICS_PORT="0",
                PYTHONUNBUFFERED="1")
    full.update(env)
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                               stderr=open(log_path, "w"), text=True)  # noqa: SIM115 - lives with the process
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            match = READY.search(line)
            if match and not ready.is_set():
                found.update(address=match.group(2), metrics=match.group(3))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not start:\n{log_path.read_text()[-4000:]}")
    return Service(name, process, found["address"], found["metrics"], log_path)


def rpcs_handled(metrics: str, method: str) -> int:
    """How many calls of the gRPC `method` the service whose metrics are at `metrics` (host:port) has answered,
    whatever their code, as Prometheus would scrape it."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return int(sum(float(value) for value in re.findall(
        rf'^qnet_grpc_server_handled_total\{{[^}}]*method="{method}"[^}}]*\}} (\S+)$', text, re.M)))


async def eventually(check: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Waits until `check()` (or what it returns, when that is awaitable) is true; fails saying `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return
        assert time.monotonic() < deadline, f"{what} (waited {timeout}s)"
        await asyncio.sleep(0.02)
