"""Coalesced: one fetch at a time for any number of concurrent callers, none of them served a fetch that began
before it called."""

from __future__ import annotations

import asyncio

from qnet_common.coalesce import Coalesced


class Source:
    """Live state (a version a writer bumps) read slowly, counting its reads."""

    def __init__(self) -> None:
        self.version = 0
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        seen = self.version
        await asyncio.sleep(0.05)
        return seen


def test_concurrent_callers_share_fetches_and_each_sees_what_was_written_before_it_called():
    source = Source()
    shared = Coalesced(source.read)

    async def scenario():
        first = asyncio.create_task(shared.get())
        await asyncio.sleep(0.01)  # the first fetch is running
        source.version = 1  # a write, then 50 readers: none may be answered by the fetch that began before it
        readers = [asyncio.create_task(shared.get()) for _ in range(50)]
        return await first, await asyncio.gather(*readers)

    first, readers = asyncio.run(scenario())
    assert first == 0
    assert readers == [1] * 50
    assert source.reads == 2


def test_a_failed_fetch_fails_the_callers_that_shared_it_and_the_next_call_fetches_again():
    calls = []

    async def fetch():
        calls.append(1)
        await asyncio.sleep(0.02)
        if len(calls) == 2:
            raise ConnectionError("replica gone")
        return len(calls)

    shared = Coalesced(fetch)

    async def scenario():
        running = asyncio.create_task(shared.get())
        await asyncio.sleep(0.005)
        joined = [asyncio.create_task(shared.get()) for _ in range(3)]
        outcomes = await asyncio.gather(running, *joined, return_exceptions=True)
        return outcomes, await shared.get()

    outcomes, after = asyncio.run(scenario())
    assert outcomes[0] == 1
    assert all(isinstance(o, ConnectionError) for o in outcomes[1:])
    assert after == 3
