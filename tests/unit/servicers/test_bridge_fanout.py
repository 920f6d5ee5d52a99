"""The bridge's one stream of events never starts "from now on" after a break: it resumes from the log's last id
at its start, so events committed while its first stream was failing reach its clients."""

from __future__ import annotations

import asyncio

import grpc

from services.gateway.bridge import Fanout


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


async def test_a_stream_broken_before_its_first_event_resumes_from_the_log_s_last_id_at_start():
    stub = FlakyEvents()
    fanout = Fanout(stub, start_at=lambda: 41)
    fanout.start()
    await asyncio.wait_for(stub.resumed.wait(), 5)
    await fanout.stop()
    assert stub.requests == [41, 41]  # used to be [0, 0]: "from now on", twice, losing what came between
