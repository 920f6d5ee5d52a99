"""WebSocket fan-out: 500 concurrent subscribers through Envoy, latency from a job's state change (its event
time in the job store) to each subscriber's message, p50 and p99. Writes bench/results/stream.md."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import pathlib
import statistics
import struct
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from websockets.asyncio.client import connect  # noqa: E402

from tests.e2e.conftest import DEV_KEY, start_mesh, stop_mesh  # noqa: E402

SUBSCRIBER_COUNTS = (1, 500)
JOBS = 20
BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


async def subscriber(url: str, received: list[tuple[str, str, float, float]], ready: asyncio.Event,
                     counter: list[int], total: int, jobs: int) -> None:
    """A `websockets` client following job updates until `jobs` jobs completed; records (job id, status,
    arrival, event time), the arrival when its message is decoded: behind every other subscriber's in this one
    process."""
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
            received.append((message["job_id"], message["status"], arrival, _stamp(message)))
            completed += message["status"] == "completed"


class RawSubscriber(asyncio.Protocol):
    """A subscriber that stamps each message when its frame is read off the socket and decodes it after the run.

    500 subscribers share this one process and its share of two cores; on a network each is a client of its
    own. A `websockets` client decodes every message as it comes, so the last of 500 copies of an update waits
    for the 499 decodings before it (about 65 us each here): the latency of the harness, not of the service.
    Server frames are unmasked; the upgrade and the subscription are sent as RFC 6455 says."""

    def __init__(self, host: str, path: str, jobs: int, on_subscribed, on_done) -> None:
        self._host, self._path, self._jobs = host, path, jobs
        self._on_subscribed, self._on_done = on_subscribed, on_done
        self._buffer = b""
        self._upgraded = self._subscribed = False
        self._completed = 0
        self.frames: list[tuple[float, bytes]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())

    def _send_text(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        size = len(payload)
        header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
        self.transport.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def data_received(self, data: bytes) -> None:
        arrival = time.time()
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._buffer.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(f"no upgrade: {self._buffer[:200]!r}")
            self._buffer, self._upgraded = self._buffer[end + 4:], True
            self._send_text(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates"]}))
        while (frame := self._next_frame()) is not None:
            opcode, payload = frame
            if opcode != 0x1:  # pings are answered by nobody here: the run is shorter than the bridge's ping
                continue
            if not self._subscribed:
                self._subscribed = True
                self._on_subscribed()
                continue
            self.frames.append((arrival, payload))
            if b'"completed"' in payload:
                self._completed += 1
                if self._completed == self._jobs:
                    self._on_done()

    def _next_frame(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        size, offset = buffer[1] & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                return None
            size, offset = struct.unpack("!H", buffer[2:4])[0], 4
        elif size == 127:
            if len(buffer) < 10:
                return None
            size, offset = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < offset + size:
            return None
        self._buffer = buffer[offset + size:]
        return buffer[0] & 0x0F, buffer[offset:offset + size]


def _stamp(message: dict) -> float:
    return datetime.datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00")).timestamp()


async def _submit(mesh, jobs: int) -> dict[str, float]:
    """Runs `jobs` jobs one after another; each job id with the time its submission was sent."""
    sent: dict[str, float] = {}
    for _ in range(jobs):
        at = time.time()
        reply = await asyncio.to_thread(mesh.request, "POST", "/execute",
                                        {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16})
        sent[reply.body["data"]["job_id"]] = at
    return sent


async def fan_out(mesh, subscribers: int, jobs: int = JOBS, *, raw: bool = True) -> dict[str, float]:
    """`subscribers` clients on one key; `jobs` jobs run one after another. Two latencies: from a state
    change's time in the job store to each subscriber's message (every update), and from the client sending
    the submission to each subscriber's `queued` update of that job. `raw`: RawSubscriber clients (arrival at
    the socket); else `websockets` clients (arrival once decoded)."""
    url = mesh.url.replace("http://", "ws://") + "/stream"
    received: list[tuple[str, str, float, float]] = []
    ready, done = asyncio.Event(), asyncio.Event()
    counter, finished = [0], [0]
    if raw:
        def on_subscribed() -> None:
            counter[0] += 1
            if counter[0] == subscribers:
                ready.set()

        def on_done() -> None:
            finished[0] += 1
            if finished[0] == subscribers:
                done.set()

        parts = urllib.parse.urlsplit(url)
        loop = asyncio.get_running_loop()
        clients = []
        for _ in range(subscribers):
            _, client = await loop.create_connection(
                lambda: RawSubscriber(parts.netloc, parts.path, jobs, on_subscribed, on_done), parts.hostname,
                parts.port)
            clients.append(client)
        finished_all = done.wait()
    else:
        tasks = [asyncio.create_task(subscriber(url, received, ready, counter, subscribers, jobs))
                 for _ in range(subscribers)]
        finished_all = asyncio.gather(*tasks)
    await asyncio.wait_for(ready.wait(), 120)
    started = time.perf_counter()
    sent = await _submit(mesh, jobs)
    await asyncio.wait_for(finished_all, 300)
    elapsed = time.perf_counter() - started
    if raw:
        for client in clients:
            client.transport.close()
            for arrival, payload in client.frames:
                message = json.loads(payload)
                received.append((message.get("job_id"), message.get("status"), arrival, _stamp(message)))
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
        results = {(n, raw): asyncio.run(fan_out(mesh, n, raw=raw)) for n in SUBSCRIBER_COUNTS for raw in (True, False)}
    finally:
        stop_mesh(mesh)
    rows = "".join(
        f"| {n} | {'raw, at the socket' if raw else 'websockets, once decoded'} | {r['messages']}"
        f" | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms |\n"
        for (n, raw), r in results.items()
    )
    text = (
        "# WebSocket fan-out\n\n"
        f"Subscribers on one key, through Envoy to the bridge; {JOBS} jobs run one after another, 3 state changes"
        " each (queued, running, completed). Latency: from the state change's time in the job store to the"
        " message arriving at a subscriber: read off its socket (raw clients, bench_stream.RawSubscriber), or"
        " decoded by a `websockets` client (after every message before it in the one client process). Every row"
        " measured in one run on this machine, whose 2 cores also run the mesh, Envoy and every client.\n\n"
        "| subscribers | client | messages | p50 | p99 | max |\n|---|---|---|---|---|---|\n" + rows
    )
    (ROOT / "bench" / "results" / "stream.md").write_text(text)
    print(text)

if __name__ == "__main__":
    main()
