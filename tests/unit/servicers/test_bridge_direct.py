"""The bridge writes an event straight to every live client that keeps up (one frame, no queue or task per
client); a client that lags gets what it missed through its own queue, in order, and is written to directly
again once it has caught up. Real websockets server and clients on loopback; the scheduler's event stream is
fed by the test."""

from __future__ import annotations

import asyncio
import json
import socket

from google.protobuf.timestamp_pb2 import Timestamp
from qnet.scheduler.v1 import job_events_service_pb2 as ev
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from qnet_common.db import Database
from qnet_common.keys import ApiKeyStore
from services.gateway.bridge import Bridge

EVENTS = 20_000  # some 3 MB of messages: far more than the lagging client's socket holds while it does not read


class FedEvents:
    """A JobEventsService stub whose one WatchEvents stream yields what the test puts in `feed`."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue = asyncio.Queue()

    def WatchEvents(self, request):
        return self._stream()

    async def _stream(self):
        while True:
            yield await self.feed.get()


def event(event_id: int) -> ev.WatchEventsResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return ev.WatchEventsResponse(event_id=event_id, topic="backend_status", status="online",
                                  backend=f"device_{event_id}", time=stamp)


async def test_a_client_that_lags_gets_every_event_in_order_and_one_that_keeps_up_is_not_held_back(sqlite_url):
    secret = ApiKeyStore(Database(sqlite_url)).create("watcher")[1]
    events = FedEvents()
    bridge = Bridge(ApiKeyStore(Database(sqlite_url)), events, max_buffer=EVENTS)
    bridge.fanout.start()
    async with serve(bridge.handle, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v2/network/stream"
        # max_queue: a client that does not read stops taking frames off its (small) socket, as a slow one does.
        small = socket.socket()
        small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        small.connect(server.sockets[0].getsockname())
        async with connect(url, sock=small, max_queue=16) as lagging, connect(url, max_queue=None) as keeping_up:
            for ws in (lagging, keeping_up):
                await ws.send(json.dumps({"api_key": secret, "subscribe": ["backend_status"]}))
                assert json.loads(await ws.recv())["type"] == "subscribed"
            followed: list[int] = []

            async def follow() -> None:
                while len(followed) < EVENTS:
                    followed.append(json.loads(await keeping_up.recv())["event_id"])

            follower = asyncio.create_task(follow())
            queued = 0
            for event_id in range(1, EVENTS + 1):
                events.feed.put_nowait(event(event_id))
                if event_id % 500 == 0:
                    await asyncio.sleep(0.01)  # the fan-out runs; the lagging client's backlog builds up
                    queued = max(queued, *(s.queue.qsize() for s in bridge.fanout.subscribers))
            await asyncio.wait_for(follower, 30)
            assert queued > 0, "the lagging client never fell behind: the test shows nothing"
            assert followed == list(range(1, EVENTS + 1))
            got: list[int] = []
            async with asyncio.timeout(60):  # now it reads: the socket's, then its queue's, then live ones
                while len(got) < EVENTS:
                    got.append(json.loads(await lagging.recv())["event_id"])
                events.feed.put_nowait(event(EVENTS + 1))
                got.append(json.loads(await lagging.recv())["event_id"])
            assert got == list(range(1, EVENTS + 2))
            assert all(s.queue.empty() and s.direct() for s in bridge.fanout.subscribers)
    await bridge.fanout.stop()
