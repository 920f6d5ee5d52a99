"""Device statuses in the shared database: an operator's change, made through any backends replica, survives
restarts and is read by every replica and by the device listings of the scheduler and the network service."""

from __future__ import annotations

import time

from qnet_common.db import Database
from qnet_common.events import Event, EventLog

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS device_status (
        device_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        updated_at {float} NOT NULL
    )""",
)


class StatusStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SCHEMA)
        EventLog(db)  # creates the event log's table if this service is the first to start

    def load(self) -> dict[str, str]:
        return {r["device_id"]: r["status"] for r in self._db.query("SELECT device_id, status FROM device_status")}

    def save(self, device_id: str, status: str, queue_depth: int = 0) -> None:
        """Stores the status and appends a backend_status event in one transaction."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO device_status (device_id, status, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
                (device_id, status, time.time()),
            )
            EventLog.append_in(
                tx, Event(topic="backend_status", status=status, backend=device_id, queue_depth=queue_depth)
            )
