"""A database outage: while PostgreSQL is down every store call answers the documented, retryable
UNAVAILABLE within its timeouts (never an INTERNAL error), and the same store objects work again by themselves
once it is back: broken connections are replaced, nothing needs a restart."""

from __future__ import annotations

import time

import pytest

from qnet_common import errors
from qnet_common.db import CONNECT_TIMEOUT_S, Database
from qnet_common.pgserver import Server
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain.jobs import QUEUED, Job, JobRequest, new_job_id

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


@pytest.fixture
def private_postgres():
    server = Server()
    if server.find_or_start(private=True) is None:
        pytest.fail("no PostgreSQL binaries to start a private server (install Debian's postgresql)")
    yield server
    server.stop()


def _job() -> Job:
    return Job(new_job_id(), "key_o", JobRequest(BELL, ("local_simulator",), "fastest", 10), QUEUED, time.time())


@pytest.mark.postgres
def test_an_outage_is_unavailable_and_the_store_recovers_by_itself(private_postgres):
    with private_postgres.database() as url:
        store = JobStore(Database(url))
        before, _ = store.insert(_job())
        private_postgres.halt()
        for call in (lambda: store.get(before.job_id), lambda: store.insert(_job()),
                     lambda: store.claim("worker", 30)):
            started = time.monotonic()
            with pytest.raises(errors.Unavailable) as raised:
                call()
            assert raised.value.http_status == 503 and raised.value.transient
            assert time.monotonic() - started < CONNECT_TIMEOUT_S + 2
        private_postgres.start_again()
        deadline = time.monotonic() + 10
        while True:  # the server accepts connections a moment after pg_ctl returns
            try:
                found = store.get(before.job_id)
                break
            except errors.Unavailable:
                assert time.monotonic() < deadline, "the store did not recover within 10 s of the database"
                time.sleep(0.2)
        assert found.job_id == before.job_id
        after, created = store.insert(_job())
        assert created and store.get(after.job_id).status == QUEUED
        store.db.close()
