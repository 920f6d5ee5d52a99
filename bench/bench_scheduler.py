"""Scheduler overhead per job and jobs per second, on SQLite and on PostgreSQL, against an instant backend.

The engine runs with its real job store and strategies; the backend answers at once, so what is measured is
the scheduler's own cost: validation, the store's transactions (insert, claim, lease, finish, events), and
the wait for completion. Writes bench/results/scheduler.md.
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from qnet_common.db import Database  # noqa: E402
from qnet_common.pgserver import Server  # noqa: E402
from services.scheduler.adapters.job_store import JobStore  # noqa: E402
from services.scheduler.domain.engine import Engine  # noqa: E402
from services.scheduler.domain.jobs import JobRequest  # noqa: E402
from services.scheduler.domain.ports import Aggregated, Assessment, DeviceInfo, DeviceRun  # noqa: E402

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


class InstantDevices:
    """A backend that answers at once: isolates the scheduler's own overhead."""

    async def list(self):
        return [DeviceInfo("instant", "online", 32, 0.0, 100_000)]

    async def assess(self, backends, qasm, shots):
        return {b: Assessment(b, True, "", 0.0, 0.0, 1.0) for b in backends}

    async def run(self, backend, qasm, shots, task_id):
        return DeviceRun({"00": shots // 2, "11": shots - shots // 2}, 0.0, 0.0, 2, 1)

    async def cancel(self, task_id):
        return None


class NoAggregator:
    async def aggregate(self, results, method, shots):
        return Aggregated({}, 1.0)


async def measure(url: str, sequential: int, concurrent: int) -> dict[str, float]:
    db = Database(url)
    engine = Engine(JobStore(db), InstantDevices(), NoAggregator(), workers=8, lease_s=30)
    engine.start()
    request = JobRequest(BELL, ("instant",), "fastest", 1024)
    latencies = []
    for _ in range(sequential):
        started = time.perf_counter()
        job = await engine.submit("bench", request)
        done = await engine.wait(job.job_id, 30)
        assert done.status == "completed", done.status
        latencies.append(time.perf_counter() - started)

    async def one() -> None:
        job = await engine.submit("bench", request)
        assert (await engine.wait(job.job_id, 60)).status == "completed"

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrent)))
    throughput = concurrent / (time.perf_counter() - started)
    await engine.stop(1)
    db.close()
    latencies.sort()
    return {"p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * latencies[int(0.95 * len(latencies))],
            "jobs_per_s": throughput}


def main() -> None:
    sequential, concurrent = 200, 400
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = asyncio.run(measure(f"sqlite:///{tmp}/bench.db", sequential, concurrent))
    server = Server()
    if server.find_or_start():
        with server.database() as url:
            results["PostgreSQL"] = asyncio.run(measure(url, sequential, concurrent))
        server.stop()
    lines = [
        "# Scheduler overhead (instant backend)", "",
        f"Submit-to-terminal latency over {sequential} sequential jobs, and throughput of {concurrent} concurrent "
        "jobs, one scheduler process with 8 workers, measured in one run on this machine.", "",
        "| Store | p50 submit→completed | p95 | jobs/s (concurrent) |", "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {r['jobs_per_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "scheduler.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
