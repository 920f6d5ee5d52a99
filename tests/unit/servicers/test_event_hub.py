"""An event committed by this process reaches the hub's watchers at its commit, not at the hub's next poll of
the log (on SQLite, nothing else announces it): a WebSocket client's update used to wait up to 20 ms for it."""

from __future__ import annotations

import asyncio

from qnet_common.db import Database
from qnet_common.events import Event, EventHub, EventLog


async def test_an_event_committed_here_wakes_the_hub_at_once_and_one_from_elsewhere_waits_for_the_poll(
        sqlite_url, monkeypatch):
    monkeypatch.setattr(EventHub, "POLL_S", 3600.0)  # a poll would never come within the test
    log = EventLog(Database.shared(sqlite_url))
    hub = EventHub(log)
    await hub.start()
    try:
        watch = hub.watch()
        first = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.2)  # the poller has read the (empty) log and sleeps
        await asyncio.to_thread(log.append, Event(topic="backend_status", status="online", backend="here"))
        assert (await asyncio.wait_for(first, 5)).backend == "here"
        # Another process's commit (another Database object stands for one) is not announced on SQLite.
        elsewhere = EventLog(Database(sqlite_url))
        second = asyncio.ensure_future(anext(watch))
        await asyncio.to_thread(elsewhere.append, Event(topic="backend_status", status="online", backend="there"))
        await asyncio.sleep(0.5)
        assert not second.done()
        second.cancel()
    finally:
        await hub.stop()
