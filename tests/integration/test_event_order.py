"""The event log never skips: with several writer processes on one database, a reader that follows the log by
`event_id > last_seen` (as EventHub and the WebSocket bridge do) receives every event, in order, with no gap,
even when a writer's transaction stays open after its event was inserted."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time

import pytest

from qnet_common.db import Database
from qnet_common.events import Event, EventHub, EventLog
from tests import procs

WRITERS, EVENTS_EACH = 3, 250


def _write(url: str, writer: int, start: multiprocessing.Event) -> None:
    db = Database(url)
    log = EventLog(db)
    rng = random.Random(writer)
    start.wait()
    for k in range(EVENTS_EACH):
        with db.transaction() as tx:
            log.append_in(tx, Event(topic="job_updates", status="completed", job_id=f"w{writer}_{k}"))
            # Work after the event within the same transaction (recording a result, say): the moment an id
            # is assigned and the moment it becomes visible are apart.
            time.sleep(rng.random() * 0.004)
    db.close()


@pytest.mark.postgres
def test_a_follower_of_the_log_misses_no_event_of_concurrent_writers(postgres_server):
    with postgres_server.database() as url:
        db = Database(url)
        log = EventLog(db)
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        writers = [context.Process(target=_write, args=(url, w, start)) for w in range(WRITERS)]
        for process in writers:
            process.start()
        start.set()
        seen: list[int] = []
        last = 0
        while any(p.is_alive() for p in writers) or last < log.last_id():
            for event in log.since(last):
                seen.append(event.event_id)
                last = event.event_id
        for process in writers:
            process.join()
            assert process.exitcode == 0
        every = [r["event_id"] for r in db.query("SELECT event_id FROM events ORDER BY event_id")]
        db.close()
    assert len(every) == WRITERS * EVENTS_EACH
    missed = sorted(set(every) - set(seen))
    assert not missed, f"the follower skipped {len(missed)} committed events, e.g. {missed[:10]}"
    assert seen == sorted(seen)


@pytest.mark.postgres
def test_an_event_is_one_statement_to_postgresql(postgres_server):
    """The ordering lock, the insert and the notification in one round trip: they were three, each inside the
    section that the lock serialises for every event-writing transaction (three events a job)."""
    with postgres_server.database() as url:
        db = Database(url)
        log = EventLog(db)
        sent: list[str] = []
        with db.transaction() as tx:
            execute = tx.execute
            tx.execute = lambda sql, params=(): sent.append(sql) or execute(sql, params)
            log.append_in(tx, Event(topic="job_updates", status="queued", job_id="j1"))
        events = log.since(0)
        db.close()
    assert len(sent) == 1, sent
    assert [(e.job_id, e.status) for e in events] == [("j1", "queued")]


@pytest.mark.postgres
async def test_a_hub_nobody_watches_reads_no_log_on_postgresql_and_a_watcher_misses_nothing(postgres_server):
    """PostgreSQL announces every event (NOTIFY), and the scheduler takes its wake-ups from the announcements:
    a hub that no watcher follows used to read the log at every commit all the same (up to 200 queries a second
    under load, for nothing). It reads nothing now; a watcher that joins later starts at the log's end, or
    replays from its `since`, and misses no event after it."""
    with postgres_server.database() as url:
        db = Database(url)
        reads: list[int] = []

        class CountedLog(EventLog):
            def since(self, event_id: int, limit: int = 1000) -> list[Event]:
                reads.append(event_id)
                return super().since(event_id, limit)

        log = CountedLog(db)
        hub = EventHub(log)
        announced: list[str] = []
        hub.on_announce = announced.append
        await hub.start()
        try:
            for k in range(20):
                await asyncio.to_thread(log.append, Event(topic="job_updates", status="queued", job_id=f"idle{k}"))
            await procs.eventually(lambda: any(p.endswith(":idle19") for p in announced), "not announced")
            await asyncio.sleep(3 * EventHub.MIN_GAP_S)
            assert reads == [], "the hub read the log with nobody watching"
            middle = log.last_id()

            async def follow(since: int | None, into: list[str], ready: asyncio.Event) -> None:
                stream = hub.watch(since).__aiter__()
                ready.set()
                async for event in stream:
                    into.append(event.job_id)

            live, replayed = [], []
            live_ready, replay_ready = asyncio.Event(), asyncio.Event()
            followers = [asyncio.create_task(follow(None, live, live_ready)),
                         asyncio.create_task(follow(middle - 5, replayed, replay_ready))]
            await asyncio.wait_for(asyncio.gather(live_ready.wait(), replay_ready.wait()), 5)
            await asyncio.sleep(0.2)  # both have joined
            for k in range(10):
                await asyncio.to_thread(log.append, Event(topic="job_updates", status="queued", job_id=f"seen{k}"))
            await procs.eventually(lambda: len(live) >= 10 and len(replayed) >= 15, "the watchers fell short")
            for task in followers:
                task.cancel()
            assert live == [f"seen{k}" for k in range(10)]
            assert replayed == [f"idle{k}" for k in range(15, 20)] + [f"seen{k}" for k in range(10)]
        finally:
            await hub.stop()
            db.close()

