"""Several schedulers and bridges on one job store: every update reaches every bridge; a client reconnecting
with `since`, even to a restarted bridge, misses nothing; unresponsive clients are dropped by heartbeat."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import time
import urllib.request

import grpc
import pytest
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc
from websockets.asyncio.client import connect

from qnet_common.db import Database
from qnet_common.events import Event, EventLog
from qnet_common.keys import ApiKeyStore
from tests import procs

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
SERVICE_KEY = "stream-service-key"


@pytest.fixture
def cluster(tmp_path, sqlite_url):
    key = ApiKeyStore(Database(sqlite_url)).create("watcher")[1]
    env = {"QNET_DATABASE_URL": sqlite_url, "QNET_SERVICE_KEY": SERVICE_KEY, "QNET_GRACE_S": "1"}
    started = []

    def start(module: str, name: str, **extra: str) -> procs.Service:
        service = procs.start(module, name, tmp_path, {**env, **extra})
        started.append(service)
        return service

    backends = start("services.backends.main", "backends", QNET_DEVICES="ionq_simulator")
    aggregator = start("services.aggregator.main", "aggregator")
    wiring = {"QNET_BACKENDS_ADDR": backends.address, "QNET_AGGREGATOR_ADDR": aggregator.address}
    schedulers = [start("services.scheduler.main", f"scheduler-{i}", **wiring) for i in range(2)]
    # Bridge 0 pings every 0.5 s (the heartbeat test); bridge 1 keeps 50 messages per client (slow consumers).
    bridges = [start("services.gateway.main", f"gateway-{i}", QNET_SCHEDULER_ADDR=schedulers[i].address,
                     QNET_WS_PING_S=("0.5", "3600")[i], QNET_WS_MAX_BUFFER=("1000", "50")[i]) for i in range(2)]
    yield {"key": key, "schedulers": schedulers, "bridges": bridges, "start": start, "wiring": wiring}
    for service in reversed(started):
        service.terminate()


def submit(address: str, key: str) -> str:
    with grpc.insecure_channel(address) as channel:
        reply = ex_grpc.ExecutionServiceStub(channel).Execute(
            ex.ExecuteRequest(qasm=BELL, backends=["ionq_simulator"], shots=16),
            metadata=(("authorization", f"Bearer {key}"),), timeout=60)
    return reply.data.job_id


async def updates_until_completed(ws, job_id: str) -> list[dict]:
    seen = []
    async with asyncio.timeout(30):
        while True:
            message = json.loads(await ws.recv())
            if message.get("job_id") == job_id:
                seen.append(message)
                if message["status"] == "completed":
                    return seen


@pytest.mark.slow
async def test_an_update_from_any_scheduler_reaches_every_bridge(cluster):
    key = cluster["key"]
    urls = [f"ws://{b.address}/api/v2/network/stream" for b in cluster["bridges"]]
    async with connect(urls[0]) as first, connect(urls[1]) as second:
        for ws in (first, second):
            await ws.send(json.dumps({"api_key": key, "subscribe": ["job_updates"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
        for scheduler in cluster["schedulers"]:
            job_id = await asyncio.to_thread(submit, scheduler.address, key)
            for ws in (first, second):
                statuses = [m["status"] for m in await updates_until_completed(ws, job_id)]
                assert statuses == ["queued", "running", "completed"]


@pytest.mark.slow
async def test_a_client_reconnecting_to_a_restarted_bridge_with_since_misses_nothing(cluster):
    key, bridge = cluster["key"], cluster["bridges"][0]
    url = f"ws://{bridge.address}/api/v2/network/stream"
    async with connect(url) as ws:
        await ws.send(json.dumps({"api_key": key, "subscribe": ["job_updates"]}))
        await ws.recv()
        job_id = await asyncio.to_thread(submit, cluster["schedulers"][0].address, key)
        last_seen = (await updates_until_completed(ws, job_id))[-1]["event_id"]
    bridge.terminate()
    missed = [await asyncio.to_thread(submit, cluster["schedulers"][1].address, key) for _ in range(2)]
    restarted = cluster["start"]("services.gateway.main", "gateway-again",
                                 QNET_SCHEDULER_ADDR=cluster["schedulers"][0].address)
    async with connect(f"ws://{restarted.address}/api/v2/network/stream") as ws:
        await ws.send(json.dumps({"api_key": key, "subscribe": ["job_updates"], "since": last_seen}))
        assert json.loads(await ws.recv())["since"] == last_seen
        replayed = []
        async with asyncio.timeout(30):
            while len(replayed) < 6:
                replayed.append(json.loads(await ws.recv()))
    assert [(m["job_id"], m["status"]) for m in replayed] == [
        (job, status) for job in missed for status in ("queued", "running", "completed")]
    assert all(a["event_id"] < b["event_id"] for a, b in zip(replayed, replayed[1:], strict=False))


@pytest.mark.slow
def test_a_client_that_never_answers_pings_is_dropped(cluster):
    host, port = cluster["bridges"][0].address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        upgrade(raw, host)
        assert raw.recv(4096).startswith(b"HTTP/1.1 101")
        opcodes = []
        raw.settimeout(10)
        while True:  # read frames, answer nothing
            header = raw.recv(2)
            if not header:
                break
            opcode, length = header[0] & 0x0F, header[1] & 0x7F
            payload = raw.recv(length) if length else b""
            opcodes.append(opcode)
            if opcode == 0x8:  # close
                code = int.from_bytes(payload[:2], "big")
                break
    assert 0x9 in opcodes, "the bridge never pinged"
    assert opcodes[-1] == 0x8 and code == 1011


#: More than the kernel's socket buffers hold (about 4 MB each way on Linux), at ~145 bytes an event.
EVENTS = 100_000


def stream_socket(address: str, key: str) -> tuple[socket.socket, bytearray]:
    """A raw WebSocket client subscribed to backend_status with a small receive window (the bridge soon waits
    on it), and what it received so far, frames after the handshake; it reads only when told to."""
    host, port = address.split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(30)
    raw.connect((host, int(port)))
    upgrade(raw, host)
    received = bytearray(raw.recv(4096))
    assert received.startswith(b"HTTP/1.1 101")
    send_frame(raw, 0x1, json.dumps({"api_key": key, "subscribe": ["backend_status"]}).encode())
    while b"subscribed" not in received:
        received += raw.recv(4096)
    return raw, received[received.index(b"\r\n\r\n") + 4:]


def upgrade(raw: socket.socket, host: str) -> None:
    """Sends the WebSocket upgrade request for the stream (the answer is the caller's to read)."""
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall((f"GET /api/v2/network/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())


def send_frame(raw: socket.socket, opcode: int, payload: bytes) -> None:
    """A client's frame (masked), payload under 64 KiB."""
    mask = os.urandom(4)
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    raw.sendall(bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def slow_consumers(bridge: procs.Service) -> float:
    with urllib.request.urlopen(f"http://{bridge.metrics}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return float(re.search(r"^qnet_gateway_slow_consumers_total (\S+)$", text, re.M).group(1))


@pytest.mark.slow
def test_consumers_too_slow_for_their_buffer_are_closed_with_4009_or_dropped_if_they_never_take_it(cluster,
                                                                                                   sqlite_url):
    """Two clients read nothing while a burst of events comes: their sockets fill, then their buffers (50
    messages on this bridge), and the bridge hangs up on both. One then reads what it was sent, up to the 4009
    close frame, and answers it: closed. The other reads nothing: dropped (after this bridge's 1 s close timeout)."""
    bridge = cluster["bridges"][1]
    (taker, received), (stalled, _) = (stream_socket(bridge.address, cluster["key"]) for _ in range(2))
    with taker, stalled:
        log = EventLog(Database(sqlite_url))
        with log._db.transaction() as tx:  # a burst of events straight into the log
            for i in range(EVENTS):
                EventLog.append_in(tx, Event(topic="backend_status", status="online", backend=f"b{i}"))
        deadline = time.monotonic() + 90  # on a loaded machine the events reach the bridge in bursts
        while slow_consumers(bridge) < 2:
            assert time.monotonic() < deadline, "the bridge never found its stalled clients too slow"
            time.sleep(0.05)
        found: list[tuple[int, bytes]] = []
        while not found or found[-1][0] != 0x8:
            chunk = taker.recv(1 << 16)
            assert chunk, "the connection ended without a close frame"
            received += chunk
            whole = list(frames(bytes(received)))
            found += whole
            del received[:sum(frame_size(payload) for _, payload in whole)]
        send_frame(taker, 0x8, (4009).to_bytes(2, "big"))
        while taker.recv(1 << 16):  # the bridge ends the connection once the close handshake is done
            pass
        assert [int.from_bytes(p[:2], "big") for opcode, p in found if opcode == 0x8] == [4009]
        assert found[-1][0] == 0x8
        assert sum(1 for opcode, _ in found if opcode == 0x1) < EVENTS, "the bridge sent everything"
        with contextlib.suppress(ConnectionResetError):  # dropped: what was sent may or may not come first
            while stalled.recv(1 << 16):
                pass
    deadline = time.monotonic() + 10
    while "dropped a slow consumer" not in (text := bridge.log_path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the line follows the reset by a moment
    assert text.count("closed a slow consumer with 4009") == 1
    assert text.count("dropped a slow consumer that did not answer the 4009 close") == 1


def frame_size(payload: bytes) -> int:
    """The size of a server's (unmasked) frame with this payload."""
    return 2 + len(payload) + (0 if len(payload) < 126 else 2 if len(payload) < 1 << 16 else 8)


def frames(data: bytes):
    """(opcode, payload) of each whole unmasked frame (a server's) in `data`; a cut-off last one is left out."""
    at = 0
    while at + 2 <= len(data):
        opcode, length, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            length, at = int.from_bytes(data[at:at + size], "big"), at + size
        if at + length > len(data):
            return
        yield opcode, data[at:at + length]
        at += length
