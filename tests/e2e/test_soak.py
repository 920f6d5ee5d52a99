"""A soak at a fixed rate through Envoy: no errors, every job terminal, memory flat.

`make test` runs it for SOAK_S = 60 s; `make soak` for ten minutes (QNET_SOAK_S=600) and writes what it measured
to bench/results/soak.md, which the README quotes.
"""

from __future__ import annotations

import collections
import os
import platform
import statistics
import threading
import time

import psutil
import pytest

from tests.e2e.conftest import ROOT
from tests.e2e.test_slice import BELL

SOAK_S = float(os.environ.get("QNET_SOAK_S", "60"))
#: Requests per second, spread over the mix below.
RATE = 20
#: Growth of any service's resident memory allowed between the end of the warm-up and the end of the soak.
GROWTH_BOUND = 48 << 20
MiB = 1 << 20


def rss_by_service(mesh) -> dict[str, int]:
    found = collections.defaultdict(int)
    for child in psutil.Process(mesh.process.pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            name = "envoy" if "envoy" in cmdline else cmdline.split("services.")[-1].split(".main")[0]
            found[name] += child.memory_info().rss
        except psutil.Error:
            continue
    return dict(found)


@pytest.mark.slow
def test_a_soak_at_a_fixed_rate_has_no_errors_and_flat_memory(single_mesh):
    mesh = single_mesh
    mix = [("POST", "/execute"), ("GET", "/status"), ("GET", "/backends"), ("GET", "/job")]
    submitted: list[str] = []
    failures: list[tuple[str, int, dict]] = []
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    lock = threading.Lock()

    def one(n: int) -> None:
        verb, path = mix[n % len(mix)]
        body = None
        if path == "/execute":
            body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16, "return_immediately": True}
        elif path == "/job":
            with lock:
                if not submitted:
                    return
                path = f"/execute/{submitted[-1]}"
        started = time.perf_counter()
        reply = mesh.request(verb, path, body, timeout=30)
        elapsed = time.perf_counter() - started
        with lock:
            latencies[mix[n % len(mix)][1]].append(elapsed)
            if reply.status != 200:
                failures.append((path, reply.status, reply.body))
            elif body is not None:
                submitted.append(reply.body["data"]["job_id"])

    def run(seconds: float) -> None:
        threads: list[threading.Thread] = []
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            thread = threading.Thread(target=one, args=(n,))
            thread.start()
            threads.append(thread)
            n += 1
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        for thread in threads:
            thread.join(60)

    run(min(10.0, SOAK_S / 6))  # warm-up: caches, pools and allocator arenas fill
    before = rss_by_service(mesh)
    warm = len(submitted)
    run(SOAK_S)
    after = rss_by_service(mesh)
    assert not failures, failures[:5]
    deadline = time.monotonic() + 60
    pending = list(submitted)
    while pending:
        job = mesh.request("GET", f"/execute/{pending[-1]}").body["data"]
        if job["status"] in ("completed", "failed", "cancelled"):
            assert job["status"] == "completed", job
            pending.pop()
            continue
        assert time.monotonic() < deadline, f"{len(pending)} jobs not terminal a minute after the soak"
        time.sleep(0.1)
    growth = {name: after.get(name, 0) - rss for name, rss in before.items()}
    assert all(g < GROWTH_BOUND for g in growth.values()), {n: f"{g / MiB:+.1f} MiB" for n, g in growth.items()}
    if SOAK_S >= 300:  # make soak: keep the numbers
        lines = [
            "# Soak", "",
            f"{SOAK_S:.0f} s at {RATE} requests/s through Envoy (the `make run` topology, SQLite), a mix of "
            f"POST /execute (ionq_simulator, 16 shots, return_immediately), GET /status, GET /backends and GET "
            f"/execute/{{id}}; Python {platform.python_version()}, {os.cpu_count()} CPUs, measured by "
            "`tests/e2e/test_soak.py` (`make soak`).", "",
            f"- Requests: {sum(len(v) for v in latencies.values())}, errors: {len(failures)}; jobs: "
            f"{len(submitted) - warm} during the soak, every one completed.",
            "", "| Route | p50 | p99 |", "|---|---|---|",
        ]
        for path, values in sorted(latencies.items()):
            values = sorted(values)
            lines.append(f"| {path} | {1000 * statistics.median(values):.1f} ms | "
                         f"{1000 * values[int(0.99 * (len(values) - 1))]:.1f} ms |")
        lines += ["", "| Service | RSS after warm-up | RSS at the end | Growth |", "|---|---|---|---|"]
        for name in sorted(before):
            lines.append(f"| {name} | {before[name] / MiB:.0f} MiB | {after.get(name, 0) / MiB:.0f} MiB | "
                         f"{growth[name] / MiB:+.1f} MiB |")
        (ROOT / "bench" / "results" / "soak.md").write_text("\n".join(lines) + "\n")
