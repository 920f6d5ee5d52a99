"""Concurrent reads of the same live state share one fetch, and never see a result older than their call.

Many clients asking for the network's status at once would each list every backends replica; with `Coalesced`
one listing runs at a time and each caller gets the result of a listing that began after it called: the one
running when it arrives began too early (a change the caller has just made may not be in it), so it waits for
the next one, which every caller arriving meanwhile shares. Fetches are at most one per fetch time, whatever
the number of callers, and what a caller has written before it asked is always in what it reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalesced(Generic[T]):
    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._lock = asyncio.Lock()  # FIFO: callers are served in the order they came
        self._started = 0
        self._outcome: tuple[T | None, BaseException | None] = (None, None)

    async def get(self) -> T:
        ticket = self._started
        async with self._lock:
            if self._started > ticket:  # a fetch began after this call and has ended: its result will do
                result, error = self._outcome
                if error is not None:
                    raise error
                return result  # type: ignore[return-value]
            self._started += 1
            try:
                result = await self._fetch()
            except Exception as error:
                self._outcome = (None, error)
                raise
            self._outcome = (result, None)
            return result
