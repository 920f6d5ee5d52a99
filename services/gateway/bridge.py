"""The WebSocket bridge: /api/v2/network/stream, fed by the scheduler's internal WatchEvents stream.

Protocol (README, "WebSocket stream"): the client's first message is
`{"api_key": "...", "subscribe": ["job_updates", "backend_status"], "since": 0}`; the bridge answers
`{"type": "subscribed", ...}` and then sends one JSON message per event, each with its `event_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

import grpc
from qnet.scheduler.v1 import job_events_service_pb2 as ev
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from qnet_common.events import TOPICS
from qnet_common.grpcserver import ON_BEHALF_OF
from qnet_common.keys import ApiKeyStore

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v2/network/stream"
#: Close codes (README): 4001 bad or missing key, 4008 no subscribe message in time, 4009 too slow a consumer,
#: 1001 the bridge is shutting down.
CLOSE_UNAUTHENTICATED = 4001
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_SLOW_CONSUMER = 4009
AUTH_TIMEOUT_S = 10.0
#: Messages buffered per client before it counts as too slow and is disconnected.
MAX_BUFFER = 1000


def message_of(event: ev.WatchEventsResponse) -> dict:
    time = datetime.fromtimestamp(event.time.ToNanoseconds() / 1e9, UTC).isoformat().replace("+00:00", "Z")
    if event.topic == "backend_status":
        return {"type": "backend_status", "event_id": event.event_id, "id": event.backend, "status": event.status,
                "queue_depth": event.queue_depth, "timestamp": time}
    message = {"type": "job_update", "event_id": event.event_id, "job_id": event.job_id, "status": event.status,
               "backend": event.backend, "timestamp": time}
    if event.status == "completed":
        message["counts"] = dict(event.counts)
    if event.error_code:
        message["error_code"] = event.error_code
    return message


class Bridge:
    def __init__(self, keys: ApiKeyStore, events: ev_grpc.JobEventsServiceStub) -> None:
        self._keys = keys
        self._events = events
        self.connections: set[ServerConnection] = set()

    async def handle(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path.split("?")[0] != STREAM_PATH:
            await ws.close(4004, "unknown path; connect to " + STREAM_PATH)
            return
        self.connections.add(ws)
        try:
            await self._session(ws)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)

    async def _session(self, ws: ServerConnection) -> None:
        key_id, topics, since = None, None, 0
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                while key_id is None:
                    key_id, topics, since = await self._subscribe(ws, await ws.recv())
        except TimeoutError:
            await ws.close(CLOSE_AUTH_TIMEOUT, "send {\"api_key\": ..., \"subscribe\": [...]} first")
            return
        if key_id == "":
            return  # closed for a bad key
        await ws.send(json.dumps({"type": "subscribed", "topics": sorted(topics), "since": since}))
        buffer: asyncio.Queue[dict] = asyncio.Queue(MAX_BUFFER)
        follower = asyncio.create_task(self._follow(ws, key_id, topics, since, buffer))
        sender = asyncio.create_task(self._send(ws, buffer))
        reader = asyncio.create_task(self._read(ws))
        done, pending = await asyncio.wait({follower, sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                task.result()

    async def _subscribe(self, ws: ServerConnection, raw: str | bytes) -> tuple[str | None, set[str], int]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except ValueError as error:
            await ws.send(json.dumps({"type": "error", "code": "INVALID_ARGUMENT",
                                      "message": f"malformed JSON ({error}); send a JSON object"}))
            return None, set(), 0
        key = await asyncio.to_thread(self._keys.lookup, str(request.get("api_key", "")))
        if key is None:
            await ws.send(json.dumps({"type": "error", "code": "UNAUTHENTICATED",
                                      "message": "invalid or missing api_key"}))
            await ws.close(CLOSE_UNAUTHENTICATED, "invalid api_key")
            return "", set(), 0
        wanted = request.get("subscribe") or list(TOPICS)
        unknown = [t for t in wanted if t not in TOPICS] if isinstance(wanted, list) else [wanted]
        if unknown:
            await ws.send(json.dumps({"type": "error", "code": "INVALID_ARGUMENT",
                                      "message": f"unknown subscription {unknown}; use {list(TOPICS)}"}))
            return None, set(), 0
        since = request.get("since", 0)
        if not isinstance(since, int) or since < 0:
            await ws.send(json.dumps({"type": "error", "code": "INVALID_ARGUMENT",
                                      "message": "since must be a non-negative event id"}))
            return None, set(), 0
        return key.key_id, set(wanted), since

    async def _follow(self, ws, key_id: str, topics: set[str], since: int, buffer: asyncio.Queue) -> None:  # noqa: ANN001
        request = ev.WatchEventsRequest(since_event_id=since, topics=sorted(topics), owner=key_id)
        while True:
            try:
                async for event in self._events.WatchEvents(request, metadata=((ON_BEHALF_OF, "mesh"),)):
                    request.since_event_id = event.event_id
                    try:
                        buffer.put_nowait(message_of(event))
                    except asyncio.QueueFull:
                        await ws.close(CLOSE_SLOW_CONSUMER, "too slow: reconnect with since=<last event_id>")
                        return
            except grpc.aio.AioRpcError as error:
                log.warning("watch stream broke code=%s; reconnecting", error.code().name)
                await asyncio.sleep(0.5)

    async def _send(self, ws: ServerConnection, buffer: asyncio.Queue) -> None:
        while True:
            await ws.send(json.dumps(await buffer.get()))

    async def _read(self, ws: ServerConnection) -> None:
        """Later messages: answer errors for malformed ones; the connection stays usable."""
        async for raw in ws:
            try:
                json.loads(raw)
            except ValueError:
                await ws.send(json.dumps({"type": "error", "code": "INVALID_ARGUMENT", "message": "malformed JSON"}))
