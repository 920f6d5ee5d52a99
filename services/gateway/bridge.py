"""The WebSocket bridge: /api/v2/network/stream, fed by the scheduler's internal event stream.

One WatchEvents stream per bridge process is fanned out to every client (each event is serialised once),
filtered by the client's key and topics. A client that connects with `since` first replays what it missed
from the job store's event log (ListEvents), then joins the live fan-out; event ids make the switch
seamless: nothing is lost, nothing repeated. Protocol: README, "WebSocket stream".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from qnet.scheduler.v1 import job_events_service_pb2 as ev
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from qnet_common.events import TOPICS
from qnet_common.keys import ApiKeyStore

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v2/network/stream"
#: Close codes (README): 4001 bad or missing key, 4008 no subscribe message in time, 4009 too slow a consumer,
#: 1011 no answer to a ping, 1001 the bridge is shutting down.
#: Event ids are 64-bit (the log's BIGSERIAL): a larger `since` can name no event.
MAX_EVENT_ID = 2**63 - 1
CLOSE_UNAUTHENTICATED = 4001
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_SLOW_CONSUMER = 4009
AUTH_TIMEOUT_S = 10.0
#: Messages buffered per client before it counts as too slow and is disconnected.
MAX_BUFFER = 1000
#: Seconds a too-slow client gets to take its close frame before its connection is dropped.
SLOW_CLOSE_TIMEOUT_S = 5.0
#: A live client with less than this waiting in its connection's write buffer (the websockets default
#: high-water mark), and nothing queued, gets an event written at once; others get it through their queue.
DIRECT_WRITE_LIMIT = 32 * 1024
#: With no subscriber for this long, the bridge closes its stream of events at the next event (each event costs
#: the scheduler and the bridge CPU, for nobody); the next subscriber opens it again from the log's end.
IDLE_STREAM_S = 5.0


def message_of(event: ev.WatchEventsResponse) -> dict:
    time = datetime.fromtimestamp(event.time.ToNanoseconds() / 1e9, UTC).isoformat().replace("+00:00", "Z")
    if event.topic == "backend_status":
        return {"type": "backend_status", "event_id": event.event_id, "id": event.backend,
                "status": event.status, "queue_depth": event.queue_depth, "timestamp": time}
    message = {"type": "job_update", "event_id": event.event_id, "job_id": event.job_id,
               "status": event.status, "backend": event.backend, "timestamp": time}
    if event.status == "completed":
        message["counts"] = dict(event.counts)
    if event.error_code:
        message["error_code"] = event.error_code
    return message


@dataclass(eq=False)
class _Subscriber:
    owner: str
    topics: set[str]
    max_buffer: int = MAX_BUFFER
    queue: asyncio.Queue = field(init=False)
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The client's connection once its replay is done; events before that wait in the queue.
    live: ServerConnection | None = None
    #: The last event id sent (by the replay, then live): one at or below it is not sent again.
    last: int = 0
    #: Its sender is writing a queued event (and may be waiting for the client to take it).
    sending: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.max_buffer)

    def wants(self, event: ev.WatchEventsResponse) -> bool:
        return event.topic in self.topics and (event.topic != "job_updates" or event.owner == self.owner)

    def direct(self) -> bool:
        """Whether an event may be written to the client at once, in order and without waiting: it is live,
        nothing of its own is queued or being sent, and it takes what it is sent."""
        return (self.live is not None and not self.sending and self.queue.empty()
                and self.live.transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT)

    def offer(self, event_id: int, text: str) -> None:
        try:
            self.queue.put_nowait((event_id, text))
        except asyncio.QueueFull:
            self.overflowed.set()


class Fanout:
    """The bridge's one live stream of events from the scheduler, offered to every subscriber. It is open only
    while someone subscribes (and IDLE_STREAM_S after the last one left)."""

    def __init__(self, events: ev_grpc.JobEventsServiceStub, start_at: Callable[[], int] | None = None) -> None:
        """`start_at` (blocking) gives the event log's last id: the stream opens there when a first subscriber
        joins, so a stream that breaks before its first event resumes from that point instead of "from now on"
        (which would lose what happened in between, for every client of this bridge)."""
        self._events = events
        self._start_at = start_at
        self.subscribers: set[_Subscriber] = set()
        self._cursor = 0
        self._task: asyncio.Task | None = None
        #: Set while the stream is open or opening; cleared when it closes for want of subscribers.
        self._open = asyncio.Event()
        self._opening = asyncio.Lock()
        self._alone_since = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def join(self, subscriber: _Subscriber) -> None:
        """Adds a subscriber; every event committed after this returns reaches it (a closed stream reopens from
        the log's end, read here)."""
        self.subscribers.add(subscriber)
        async with self._opening:
            if not self._open.is_set():
                self._cursor = await self._log_end()
                self._open.set()

    def leave(self, subscriber: _Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self._alone_since = time.monotonic()

    async def _log_end(self) -> int:
        """The log's last id, retried while the database is down, as the bridge's clients wait for it; 0 ("from
        now on") without a log to read."""
        while self._start_at is not None:
            try:
                return await asyncio.to_thread(self._start_at)
            except Exception:
                log.warning("reading the event log's last id failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
        return 0

    async def _follow(self) -> None:
        while True:
            await self._open.wait()
            request = ev.WatchEventsRequest(since_event_id=self._cursor)  # 0: from now on; else resume
            call = self._events.WatchEvents(request)
            try:
                async for event in call:
                    self._cursor = event.event_id
                    if not self.subscribers and time.monotonic() - self._alone_since >= IDLE_STREAM_S:
                        self._open.clear()  # the next subscriber reopens it, from the log's end then
                        call.cancel()
                        break
                    self._offer(event)
            except grpc.aio.AioRpcError as error:
                log.warning("event stream broke code=%s; resuming after event %d", error.code().name, self._cursor)
                await asyncio.sleep(0.5)

    def _offer(self, event: ev.WatchEventsResponse) -> None:
        text, direct = "", []
        for subscriber in list(self.subscribers):
            if subscriber.wants(event) and event.event_id > subscriber.last:
                text = text or json.dumps(message_of(event))
                if subscriber.direct():
                    subscriber.last = event.event_id
                    direct.append(subscriber.live)
                else:
                    subscriber.offer(event.event_id, text)
        if direct:  # one frame written to every client that keeps up, no task or queue per client
            broadcast(direct, text)


class Bridge:
    def __init__(self, keys: ApiKeyStore, events: ev_grpc.JobEventsServiceStub, max_buffer: int = MAX_BUFFER,
                 start_at: Callable[[], int] | None = None, on_slow: Callable[[], None] = lambda: None) -> None:
        """`on_slow` is called each time a client is found too slow, before it is hung up on."""
        self._max_buffer = max_buffer
        self._on_slow = on_slow
        self._keys = keys
        self._events = events
        self.fanout = Fanout(events, start_at)
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
        key_id, topics, since = None, set(), 0
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                while key_id is None:
                    key_id, topics, since = await self._subscribe(ws, await ws.recv())
        except TimeoutError:
            await ws.close(CLOSE_AUTH_TIMEOUT, "send {\"api_key\": ..., \"subscribe\": [...]} first")
            return
        if key_id == "":
            return  # closed for a bad key
        subscriber = _Subscriber(key_id, topics, self._max_buffer)
        await self.fanout.join(subscriber)  # before the replay: nothing falls between the two
        try:
            await ws.send(json.dumps({"type": "subscribed", "topics": sorted(topics), "since": since}))
            if since:
                subscriber.last = await self._replay(ws, subscriber, since)
            subscriber.live = ws
            sender = asyncio.create_task(self._send(ws, subscriber))
            reader = asyncio.create_task(self._read(ws))
            too_slow = asyncio.create_task(subscriber.overflowed.wait())
            done, pending = await asyncio.wait({sender, reader, too_slow}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    task.result()
            if too_slow in done:  # the sender may be stuck on a full socket: hang up from here
                self.fanout.leave(subscriber)
                self._on_slow()
                await self._hang_up_on_slow(ws)
        finally:
            self.fanout.leave(subscriber)

    @staticmethod
    async def _hang_up_on_slow(ws: ServerConnection) -> None:
        """Close with 4009; a client that reads nothing at all never takes the close frame: then drop it (here
        after SLOW_CLOSE_TIMEOUT_S, or by websockets after its close timeout if that is shorter)."""
        try:
            await asyncio.wait_for(ws.close(CLOSE_SLOW_CONSUMER, "too slow: reconnect with since=<last event_id>"),
                                   SLOW_CLOSE_TIMEOUT_S)
        except TimeoutError:
            ws.transport.abort()
        if ws.protocol.close_rcvd is not None:  # the client answered the close frame: it took it
            log.info("closed a slow consumer with %d", CLOSE_SLOW_CONSUMER)
        else:
            log.info("dropped a slow consumer that did not answer the %d close", CLOSE_SLOW_CONSUMER)

    async def _replay(self, ws: ServerConnection, subscriber: _Subscriber, since: int) -> int:
        """Sends the stored events after `since`; returns the last event id sent or scanned."""
        cursor = since
        while True:
            page = await self._events.ListEvents(ev.ListEventsRequest(
                since_event_id=cursor, topics=sorted(subscriber.topics), owner=subscriber.owner))
            for event in page.events:
                await ws.send(json.dumps(message_of(event)))
            cursor = page.last_event_id
            if page.caught_up:
                return cursor

    async def _send(self, ws: ServerConnection, subscriber: _Subscriber) -> None:
        """The queued events, in order (those that came during the replay, or while the client lagged)."""
        while True:
            event_id, text = await subscriber.queue.get()
            if event_id > subscriber.last:  # the replay may already have sent it
                subscriber.last = event_id
                subscriber.sending = True
                try:
                    await ws.send(text)
                finally:
                    subscriber.sending = False

    async def _subscribe(self, ws: ServerConnection, raw: str | bytes) -> tuple[str | None, set[str], int]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except RecursionError:
            await self._error(ws, "INVALID_ARGUMENT", "JSON nested too deeply; send a flat JSON object")
            return None, set(), 0
        except ValueError as error:
            await self._error(ws, "INVALID_ARGUMENT", f"malformed JSON ({error}); send a JSON object")
            return None, set(), 0
        key = await asyncio.to_thread(self._keys.lookup, str(request.get("api_key", "")))
        if key is None:
            await self._error(ws, "UNAUTHENTICATED", "invalid or missing api_key")
            await ws.close(CLOSE_UNAUTHENTICATED, "invalid api_key")
            return "", set(), 0
        wanted = request.get("subscribe") or list(TOPICS)
        unknown = [t for t in wanted if t not in TOPICS] if isinstance(wanted, list) else [wanted]
        if unknown:
            await self._error(ws, "INVALID_ARGUMENT", f"unknown subscription {unknown}; use {list(TOPICS)}")
            return None, set(), 0
        since = request.get("since", 0)
        if not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= MAX_EVENT_ID:
            await self._error(ws, "INVALID_ARGUMENT", f"since must be an event id from 0 to {MAX_EVENT_ID}")
            return None, set(), 0
        return key.key_id, set(wanted), since

    @staticmethod
    async def _error(ws: ServerConnection, code: str, message: str) -> None:
        await ws.send(json.dumps({"type": "error", "code": code, "message": message}))

    async def _read(self, ws: ServerConnection) -> None:
        """Later messages: answer errors for malformed ones; the connection stays usable."""
        async for raw in ws:
            try:
                json.loads(raw)
            except (ValueError, RecursionError):
                await self._error(ws, "INVALID_ARGUMENT", "malformed or too deeply nested JSON")
