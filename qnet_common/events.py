"""The durable event log: every job and backend state change, in the shared database.

Services append; the scheduler's WatchEvents streams from it (replay by event id, then live), so a client
that reconnects with `since` misses nothing, whichever replica wrote the event.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from qnet_common.db import Database, Tx

TOPICS = ("job_updates", "backend_status")

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

    @staticmethod
    def append_in(tx: Tx, event: Event) -> None:
        """Appends inside the caller's transaction, so a state change and its event commit together."""
        tx.execute(
            "INSERT INTO events (topic, job_id, status, backend, queue_depth, counts, owner, error_code, time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.topic, event.job_id, event.status, event.backend, event.queue_depth,
                json.dumps(event.counts), event.owner, event.error_code, event.time or time.time(),
            ),
        )
        if tx_dialect(tx) == "postgresql":
            tx.execute("NOTIFY qnet_events")

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
    return tx._db.dialect  # noqa: SLF001 - Tx is this package's own type
