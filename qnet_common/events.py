"""The durable event log: every job and backend state change, in the shared database.

Services append; the scheduler's WatchEvents streams from it (replay by event id, then live), so a client
that reconnects with `since` misses nothing, whichever replica wrote the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from qnet_common import errors
from qnet_common.db import Database, Listener, Tx

TOPICS = ("job_updates", "backend_status")
#: The advisory lock that orders event ids by commit (see EventLog.append_in).
EVENT_ORDER_LOCK = 7262022
#: The PostgreSQL channel every appended event is announced on.
NOTIFY_CHANNEL = "qnet_events"
#: Per database, the wake-ups of this process's hubs: a transaction of this process that appends an event wakes
#: them at its commit, so its events need not wait for their next poll (SQLite announces nothing; on
#: PostgreSQL the notification comes later, through the database).
_HUBS_HERE: dict[Database, set[Callable[[], None]]] = {}

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        event_id {serial},
        topic TEXT NOT NULL,
        job_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        backend TEXT NOT NULL DEFAULT '',
        queue_depth INTEGER NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{{}}',
        owner TEXT NOT NULL DEFAULT '',
        error_code TEXT NOT NULL DEFAULT '',
        time {float} NOT NULL
    )""",
)


@dataclass(frozen=True)
class Event:
    topic: str
    status: str
    job_id: str = ""
    backend: str = ""
    queue_depth: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    owner: str = ""
    error_code: str = ""
    time: float = 0.0
    event_id: int = 0


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SCHEMA)

    @property
    def db(self) -> Database:
        return self._db

    @staticmethod
    def append_in(tx: Tx, event: Event) -> None:
        """Appends inside the caller's transaction, so a state change and its event commit together.

        Readers follow the log by `event_id > last_seen`, so ids must become visible in the order they are
        assigned. A sequence does not promise that: a transaction that took id 7 may commit after one that
        took id 8, and a reader that saw 8 would skip 7 for good. On PostgreSQL the id is therefore taken
        under a transaction-scoped advisory lock, released only at commit: event-writing transactions commit
        in id order. The price is that they are serialised from their event to their commit, so the event is
        the last statement of every transaction that writes one, and the lock, the insert and the notification
        that wakes listeners at commit ("topic:status:job_id") are one statement: one round trip in the
        serialised section. (SQLite serialises all writers anyway.)
        """
        values = (event.topic, event.job_id, event.status, event.backend, event.queue_depth,
                  json.dumps(event.counts), event.owner, event.error_code, event.time or time.time())
        columns = "topic, job_id, status, backend, queue_depth, counts, owner, error_code, time"
        if tx_dialect(tx) == "postgresql":
            # The insert reads its row from the lock's result, so the lock is held before the id is drawn; the
            # notification reads the inserted row, so it follows the insert.
            tx.execute(
                f"WITH locked AS (SELECT pg_advisory_xact_lock(?)),"
                f" inserted AS (INSERT INTO events ({columns}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? FROM locked"
                f" RETURNING event_id)"
                f" SELECT pg_notify(?, ?) FROM inserted",
                (EVENT_ORDER_LOCK, *values, NOTIFY_CHANNEL, f"{event.topic}:{event.status}:{event.job_id}"),
            )
        else:
            tx.execute(f"INSERT INTO events ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        for wake in _HUBS_HERE.get(tx.db, ()):
            tx.after_commit(wake)

    def append(self, event: Event) -> None:
        with self._db.transaction() as tx:
            self.append_in(tx, event)

    def since(self, event_id: int, limit: int = 1000) -> list[Event]:
        rows = self._db.query(
            "SELECT * FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?", (event_id, limit)
        )
        return [
            Event(
                topic=r["topic"], status=r["status"], job_id=r["job_id"], backend=r["backend"],
                queue_depth=r["queue_depth"], counts=json.loads(r["counts"]), owner=r["owner"],
                error_code=r["error_code"], time=r["time"], event_id=r["event_id"],
            )
            for r in rows
        ]

    def last_id(self) -> int:
        rows = self._db.query("SELECT MAX(event_id) AS last FROM events")
        return int(rows[0]["last"] or 0)


def tx_dialect(tx: Tx) -> str:
    return tx.db.dialect


class EventHub:
    """One poller of the event log per process, fanned out to every watcher (one query per tick, not one
    per watcher). A watcher starting at `since` first gets the missed events from the log, then live ones.

    On PostgreSQL the poller sleeps until an event is announced (LISTEN/NOTIFY), with a slow poll besides in
    case a notification was lost, and reads nothing while no watcher follows the log here (`on_announce` has
    every event); on SQLite (one machine, no notifications) it polls every POLL_S.
    """

    POLL_S = 0.02
    #: Reads of the log are at least this far apart, however often commits here wake the poller (under load).
    MIN_GAP_S = 0.005
    #: With notifications, the poll that catches up after one was lost.
    NOTIFIED_POLL_S = 1.0
    #: A watcher this far behind is dropped (its client reconnects with `since`).
    MAX_QUEUE = 10_000

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._watchers: set[_Watcher] = set()
        self._cursor = 0
        self._task: asyncio.Task | None = None
        self._nudge = asyncio.Event()
        self._listener: Listener | None = None
        #: Called with the payload of every announced event ("topic:status:job_id"; "" after a reconnect).
        self.on_announce: Callable[[str], None] = lambda payload: None
        #: Called with every event the poller reads, before the watchers get it.
        self.on_event: Callable[[Event], None] = lambda event: None
        self._ending = False
        self._wake_here: Callable[[], None] = lambda: None
        #: Reads skipped while nobody here followed the log and the database announced every event: the cursor
        #: is behind, and the first watcher moves it to the log's end (under `_catching`) before it joins.
        self._behind = False
        self._catching = asyncio.Lock()

    async def start(self) -> None:
        self._cursor = await asyncio.to_thread(self.log.last_id)
        loop = asyncio.get_running_loop()
        self._listener = Listener(self.log.db, NOTIFY_CHANNEL,
                                  lambda payload: loop.call_soon_threadsafe(self._announced, payload))
        self._listener.start()
        wake = self._wake_here = functools.partial(loop.call_soon_threadsafe, self._nudge.set)
        _HUBS_HERE.setdefault(self.log.db, set()).add(wake)
        self._task = asyncio.create_task(self._poll())

    def _announced(self, payload: str) -> None:
        self._nudge.set()
        self.on_announce(payload)

    def end_watches(self) -> None:
        """Ends every watch with a resumable UNAVAILABLE (this replica is leaving: resume on another)."""
        self._ending = True
        for watcher in list(self._watchers):
            watcher.ended = True
            with contextlib.suppress(asyncio.QueueFull):
                watcher.queue.put_nowait(None)

    async def stop(self) -> None:
        self.end_watches()
        _HUBS_HERE.get(self.log.db, set()).discard(self._wake_here)
        if self._listener is not None:
            self._listener.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        announced = self._listener is not None and self._listener.active
        idle = self.NOTIFIED_POLL_S if announced else self.POLL_S
        read_at = 0.0
        while True:
            await asyncio.sleep(max(0.0, read_at + self.MIN_GAP_S - time.monotonic()))
            self._nudge.clear()
            read_at = time.monotonic()
            if announced and not self._watchers:
                # Nobody here follows the log, and `on_announce` has every event from the database: reading it
                # would only move the cursor (on PostgreSQL a query per commit, 200 a second under load).
                self._behind = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), timeout=idle)
                continue
            try:
                batch = await asyncio.to_thread(self.log.since, self._cursor)
            except Exception:  # the database is briefly unreachable: keep the watchers, try again
                await asyncio.sleep(1.0)
                continue
            for event in batch:
                self._cursor = event.event_id
                self.on_event(event)
                for watcher in list(self._watchers):
                    try:
                        watcher.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        self._watchers.discard(watcher)
                        watcher.overflowed = True
            if len(batch) < 1000:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), timeout=idle)

    async def watch(self, since: int | None = None) -> AsyncIterator[Event]:
        """Events after `since` (None: from now on), in order, without gaps or repeats."""
        watcher = _Watcher(asyncio.Queue(self.MAX_QUEUE))
        async with self._catching:
            if self._behind:  # the poller reads nothing while nobody watches: from the log's end on
                self._cursor = max(self._cursor, await asyncio.to_thread(self.log.last_id))
                self._behind = False
        self._watchers.add(watcher)  # no await since the catch-up: the poller reads on from the cursor
        try:
            last = self._cursor if since is None else since
            if since is not None:
                while True:  # replay from the log until the live queue takes over
                    missed = await asyncio.to_thread(self.log.since, last)
                    for event in missed:
                        last = event.event_id
                        yield event
                    if len(missed) < 1000:
                        break
            while True:
                if watcher.overflowed and watcher.queue.empty():
                    raise errors.WatcherTooSlow(
                        f"watcher fell more than {self.MAX_QUEUE} events behind; resume with since_event_id={last}")
                if self._ending or watcher.ended:
                    raise errors.Unavailable(
                        f"this scheduler replica is shutting down; resume with since_event_id={last} on another")
                event = await watcher.queue.get()
                if event is None:
                    continue  # ended: raised above
                if event.event_id > last:
                    last = event.event_id
                    yield event
        finally:
            self._watchers.discard(watcher)


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue
    overflowed: bool = False
    ended: bool = False
