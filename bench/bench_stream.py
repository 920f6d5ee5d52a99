"""WebSocket fan-out: 500 concurrent subscribers through Envoy, latency from a job's state change (its event
time in the job store) to each subscriber's message, p50 and p99. Writes bench/results/stream.md."""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from websockets.asyncio.client import connect  # noqa: E402

from tests.e2e.conftest import DEV_KEY, start_mesh, stop_mesh  # noqa: E402

SUBSCRIBER_COUNTS = (1, 500)
JOBS = 20
BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


async def subscriber(url: str, received: list[tuple[str, str, float, float]], ready: asyncio.Event,
                     counter: list[int], total: int, jobs: int) -> None:
    """Follows job updates until `jobs` jobs completed; records (job id, status, arrival, event time)."""
    async with connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates"]}))
        await ws.recv()
        counter[0] += 1
        if counter[0] == total:
            ready.set()
        completed = 0
        while completed < jobs:
            message = json.loads(await ws.recv())
            arrival = time.time()
            stamp = datetime.datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00")).timestamp()
            received.append((message["job_id"], message["status"], arrival, stamp))
            completed += message["status"] == "completed"


async def fan_out(mesh, subscribers: int, jobs: int = JOBS) -> dict[str, float]:
    """`subscribers` clients on one key; `jobs` jobs run one after another. Two latencies: from a state
    change's time in the job store to each subscriber's message (every update), and from the client sending
    the submission to each subscriber's `queued` update of that job."""
    url = mesh.url.replace("http://", "ws://") + "/stream"
    received: list[tuple[str, str, float, float]] = []
    ready = asyncio.Event()
    counter = [0]
    tasks = [asyncio.create_task(subscriber(url, received, ready, counter, subscribers, jobs))
             for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 120)
    started = time.perf_counter()
    sent: dict[str, float] = {}
    for _ in range(jobs):
        at = time.time()
        reply = await asyncio.to_thread(mesh.request, "POST", "/execute",
                                        {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16})
        sent[reply.body["data"]["job_id"]] = at
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    elapsed = time.perf_counter() - started
    ours = [r for r in received if r[0] in sent]  # the updates of these jobs only
    latencies = sorted(arrival - stamp for _, _, arrival, stamp in ours)
    submitted = sorted(arrival - sent[job] for job, status, arrival, _ in ours if status == "queued")
    return {"messages": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * len(latencies))], "max_ms": 1000 * latencies[-1],
            "submit_p50_ms": 1000 * statistics.median(submitted),
            "submit_p99_ms": 1000 * submitted[int(0.99 * len(submitted))], "elapsed_s": elapsed}


def main() -> None:
    mesh = start_mesh(pathlib.Path(tempfile.mkdtemp(prefix="qnet-bench-")), {"QNET_LOG_LEVEL": "WARNING"})
    try:
        results = {n: asyncio.run(fan_out(mesh, n)) for n in SUBSCRIBER_COUNTS}
    finally:
        stop_mesh(mesh)
    rows = "".join(
        f"| {n} | {r['messages']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms |\n"
        for n, r in results.items()
    )
    text = (
        "# WebSocket fan-out\n\n"
        f"Subscribers on one key, through Envoy to the bridge; {JOBS} jobs run one after another, 3 state changes"
        " each (queued, running, completed). Latency: from the state change's time in the job store to the"
        " message arriving at a subscriber. Both rows measured in one run on this machine, whose 2 cores also"
        " run the mesh, Envoy and every client.\n\n"
        "| subscribers | messages | p50 | p99 | max |\n|---|---|---|---|---|\n" + rows
    )
    (ROOT / "bench" / "results" / "stream.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
