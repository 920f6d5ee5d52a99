"""Two backends replicas on one database: an operator's status change through one is seen by the other at
once, and is published as exactly one backend_status event (on SQLite and PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from qnet_common.db import Database
from qnet_common.device_status import StatusStore
from qnet_common.events import EventLog
from services.backends.adapters.registry import build_devices
from services.backends.domain.fleet import Fleet


def replica(db_url: str, pool: ThreadPoolExecutor) -> Fleet:
    store = StatusStore(Database(db_url))
    return Fleet(build_devices(["ionq_simulator"]), pool, store.load(), on_status=store.save,
                 load_statuses=store.load)


def test_a_status_change_through_one_replica_is_seen_by_the_other(db_url):
    with ThreadPoolExecutor(1) as pool:
        first, second = replica(db_url, pool), replica(db_url, pool)
        log = EventLog(Database(db_url))
        before = log.last_id()
        assert second.statuses["ionq_simulator"] == "online"
        first.set_status("ionq_simulator", "maintenance")
        second.refresh_statuses()  # what its follow_statuses task does every STATUS_TTL_S
        assert second.statuses["ionq_simulator"] == "maintenance"
        events = [e for e in log.since(before) if e.topic == "backend_status"]
        assert [(e.backend, e.status) for e in events] == [("ionq_simulator", "maintenance")]
        second.set_status("ionq_simulator", "online")
        first.refresh_statuses()
        assert first.statuses["ionq_simulator"] == "online"
