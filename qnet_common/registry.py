"""The mesh's registry: every service replica, with the address others reach it at and the devices it serves.

Each replica registers when it starts serving and renews its lease every HEARTBEAT_S; one that dies drops out
when its lease lapses (LEASE_S), one that drains deregisters at once. The scheduler and the network service
route device calls by it, and the topology is drawn from it.

Leases are compared with each reader's own clock (`time.time()`): replicas' clocks must agree to well within
LEASE_S, as NTP keeps them on any cluster. Rows of replicas that are gone are kept a while (FORGET_S) so that a
device whose every adapter is down is still known (reported offline, not "not found").
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from qnet_common.db import Database

log = logging.getLogger(__name__)

#: A replica that has not renewed its registration for this long is taken for dead.
LEASE_S = 6.0
HEARTBEAT_S = 1.5
#: Registrations of replicas gone this long are deleted (their devices are forgotten).
FORGET_S = 86_400.0

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS registry (
        instance_id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        address TEXT NOT NULL,
        devices TEXT NOT NULL DEFAULT '[]',
        started_at {float} NOT NULL,
        expires_at {float} NOT NULL,
        drained INTEGER NOT NULL DEFAULT 0
    )""",
)


@dataclass(frozen=True)
class Instance:
    instance_id: str
    service: str
    address: str
    devices: tuple[str, ...]
    started_at: float
    expires_at: float
    #: Deregistered on purpose (a drain): out of rotation at once, whatever it still answers.
    drained: bool = False

    def live(self, now: float) -> bool:
        return self.expires_at > now


class Registry:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SCHEMA)

    @staticmethod
    def new_instance_id(service: str) -> str:
        return f"{service}-{secrets.token_hex(4)}"

    def register(self, instance_id: str, service: str, address: str, devices: Sequence[str] = ()) -> None:
        """Registers or renews (the same call: a replica whose row was lost during an outage comes back)."""
        now = time.time()
        self._db.query(
            "INSERT INTO registry (instance_id, service, address, devices, started_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET address = excluded.address,"
            " devices = excluded.devices, expires_at = excluded.expires_at, drained = 0",
            (instance_id, service, address, json.dumps(list(devices)), now, now + LEASE_S),
        )

    def deregister(self, instance_id: str) -> None:
        """Ends the lease now (a drain); the row stays so its devices stay known."""
        self._db.query("UPDATE registry SET expires_at = ?, drained = 1 WHERE instance_id = ?",
                       (time.time(), instance_id))

    def instances(self) -> list[Instance]:
        """Every registration not yet forgotten, live or not, oldest first."""
        self._db.query("DELETE FROM registry WHERE expires_at < ?", (time.time() - FORGET_S,))
        rows = self._db.query("SELECT * FROM registry ORDER BY started_at, instance_id")
        return [
            Instance(r["instance_id"], r["service"], r["address"], tuple(json.loads(r["devices"])),
                     r["started_at"], r["expires_at"], bool(r["drained"]))
            for r in rows
        ]


async def keep_registered(registry: Registry, instance_id: str, service: str, address: str,
                          devices: Sequence[str]) -> None:
    """Renews the registration every HEARTBEAT_S until cancelled; an unreachable database is retried."""
    while True:
        try:
            await asyncio.to_thread(registry.register, instance_id, service, address, devices)
        except Exception:  # the database is down: the lease may lapse, the next beat restores it
            log.warning("renewing the registration of %s failed", instance_id, exc_info=True)
        await asyncio.sleep(HEARTBEAT_S)
