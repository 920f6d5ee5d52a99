"""The bridge's one stream of events: open only while someone subscribes, from the log's last id when the first
subscriber joins (never "from now on" after a break, which would lose what came between), and closed once nobody
has subscribed for IDLE_STREAM_S, so that events nobody receives cost neither the scheduler nor the bridge."""

from __future__ import annotations

import asyncio

import grpc
from qnet.scheduler.v1 import job_events_service_pb2 as ev

from services.gateway import bridge as bridge_module
from services.gateway.bridge import Fanout, _Subscriber


class FlakyEvents:
    """A JobEventsService stub whose first WatchEvents breaks at once, as when its scheduler was just killed."""

    def __init__(self) -> None:
        self.requests = []
        self.resumed = asyncio.Event()

    def WatchEvents(self, request):
        self.requests.append(request.since_event_id)
        return self._stream(len(self.requests))

    async def _stream(self, call: int):
        if call == 1:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "scheduler gone")
        self.resumed.set()
        await asyncio.Event().wait()
        yield  # pragma: no cover


class FedCall:
    """One WatchEvents call: yields what the test feeds it, until cancelled (as grpc.aio's call)."""

    def __init__(self, since: int) -> None:
        self.since = since
        self.feed: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.feed.get()


class FedEvents:
    def __init__(self) -> None:
        self.calls: list[FedCall] = []
        self.opened = asyncio.Event()

    def WatchEvents(self, request):
        self.calls.append(FedCall(request.since_event_id))
        self.opened.set()
        return self.calls[-1]


def event(event_id: int) -> ev.WatchEventsResponse:
    return ev.WatchEventsResponse(event_id=event_id, topic="backend_status", status="online", backend="dev")


def subscriber() -> _Subscriber:
    return _Subscriber("key", {"backend_status"}, 100)


async def test_a_stream_broken_before_its_first_event_resumes_from_the_log_s_last_id_at_the_first_join():
    stub = FlakyEvents()
    fanout = Fanout(stub, start_at=lambda: 41)
    fanout.start()
    await fanout.join(subscriber())
    await asyncio.wait_for(stub.resumed.wait(), 5)
    await fanout.stop()
    assert stub.requests == [41, 41]  # used to be [0, 0]: "from now on", twice, losing what came between


async def test_the_stream_is_open_only_while_someone_subscribes(monkeypatch):
    monkeypatch.setattr(bridge_module, "IDLE_STREAM_S", 0.2)
    log_end = [7]
    stub = FedEvents()
    fanout = Fanout(stub, start_at=lambda: log_end[0])
    fanout.start()
    await asyncio.sleep(0.1)
    assert stub.calls == []  # nobody subscribes: no stream

    first = subscriber()
    await fanout.join(first)
    await asyncio.wait_for(stub.opened.wait(), 5)
    assert [c.since for c in stub.calls] == [7]  # from the log's end when the subscriber joined
    stub.calls[0].feed.put_nowait(event(8))
    await asyncio.wait_for(until(lambda: first.queue.qsize() == 1), 5)  # not live yet: queued for it

    fanout.leave(first)
    stub.calls[0].feed.put_nowait(event(9))  # within IDLE_STREAM_S of the leave: the stream stays
    await asyncio.sleep(0.3)
    assert not stub.calls[0].cancelled
    stub.calls[0].feed.put_nowait(event(10))  # past it, nobody subscribed: closed at this event
    await asyncio.wait_for(until(lambda: stub.calls[0].cancelled), 5)
    assert len(stub.calls) == 1

    log_end[0] = 15  # events 11..15 were committed while the stream was closed, for nobody
    stub.opened.clear()
    second = subscriber()
    await fanout.join(second)
    await asyncio.wait_for(stub.opened.wait(), 5)
    assert [c.since for c in stub.calls] == [7, 15]
    stub.calls[1].feed.put_nowait(event(16))
    await asyncio.wait_for(until(lambda: second.queue.qsize() == 1), 5)
    assert second.queue.get_nowait()[0] == 16
    await fanout.stop()


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
