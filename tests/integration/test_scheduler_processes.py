"""Schedulers as real processes over a real backends service: crashes lose nothing, replicas share work."""

from __future__ import annotations

import collections
import re
import time

import grpc
import pytest
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc

from qnet_common.db import Database
from qnet_common.keys import ApiKeyStore
from tests import procs

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
SERVICE_KEY = "integration-service-key"


@pytest.fixture
def mesh_env(tmp_path):
    def make(db_url: str, **extra: str) -> dict[str, str]:
        return {"QNET_DATABASE_URL": db_url, "QNET_SERVICE_KEY": SERVICE_KEY, "QNET_DATA_DIR": str(tmp_path),
                "QNET_GRACE_S": "2", **extra}
    return make


def submit(address: str, key: str, count: int, **fields) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = ex_grpc.ExecutionServiceStub(channel)
        return [
            stub.Execute(ex.ExecuteRequest(qasm=BELL, shots=64, return_immediately=True, **fields),
                         metadata=(("authorization", f"Bearer {key}"),), timeout=60).data.job_id
            for _ in range(count)
        ]


def wait_terminal(db: Database, job_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = {r["job_id"]: r for r in db.query("SELECT job_id, status, ran_by, claims FROM jobs")}
        if all(rows.get(j, {}).get("status") in ("completed", "failed", "cancelled") for j in job_ids):
            return rows
        if time.monotonic() > deadline:
            pending = {j: rows.get(j, {}).get("status") for j in job_ids
                       if rows.get(j, {}).get("status") not in ("completed", "failed", "cancelled")}
            raise AssertionError(f"jobs not terminal after {timeout}s: {pending}")
        time.sleep(0.2)


def terminal_events(db: Database, job_ids: list[str]) -> dict[str, int]:
    rows = db.query("SELECT job_id, COUNT(*) AS n FROM events WHERE status IN ('completed', 'failed', 'cancelled')"
                    " GROUP BY job_id")
    counts = {r["job_id"]: int(r["n"]) for r in rows}
    return {j: counts.get(j, 0) for j in job_ids}


def executions(backends: procs.Service) -> collections.Counter:
    """Device executions per job, from the backends service's own "executing task=" log lines."""
    text = backends.log_path.read_text()
    return collections.Counter(m.group(1) for m in re.finditer(r"executing task=(net_job_\w+?)\.", text))


@pytest.mark.slow
def test_a_scheduler_killed_mid_work_loses_no_job_and_records_no_result_twice(tmp_path, sqlite_url, mesh_env):
    key = ApiKeyStore(Database(sqlite_url)).create("crash")[1]
    # Slow device runs (2-3 s each) make sure the kill lands while jobs are running.
    backends = procs.start("services.backends.main", "backends", tmp_path, mesh_env(
        sqlite_url, QNET_DEVICES="local_simulator", QNET_FAULTS="local_simulator=slow"))
    aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, mesh_env(sqlite_url))
    env = mesh_env(sqlite_url, QNET_BACKENDS_ADDR=backends.address, QNET_AGGREGATOR_ADDR=aggregator.address,
                   QNET_LEASE_S="2", QNET_WORKERS="4")
    first = procs.start("services.scheduler.main", "scheduler-1", tmp_path, env)
    try:
        job_ids = submit(first.address, key, 12, backends=["local_simulator"])
        db = Database(sqlite_url)
        deadline = time.monotonic() + 30
        while not db.query("SELECT 1 FROM jobs WHERE status = 'running'"):
            assert time.monotonic() < deadline, "no job started running"
            time.sleep(0.05)
        first.kill()  # SIGKILL: no drain, leases left behind
        second = procs.start("services.scheduler.main", "scheduler-2", tmp_path, env)
        try:
            rows = wait_terminal(db, job_ids, timeout=120)
        finally:
            second.terminate()
        assert {rows[j]["status"] for j in job_ids} == {"completed"}
        assert set(terminal_events(db, job_ids).values()) == {1}
        assert any(rows[j]["claims"] == 2 for j in job_ids), "no job was taken over after the kill"
        # The killed scheduler had submitted tasks it never recorded: the takeover finds them on the device
        # instead of running the circuit again.
        ran = executions(backends)
        assert {ran[j] for j in job_ids} == {1}, {j: ran[j] for j in job_ids if ran[j] != 1}
    finally:
        backends.terminate()
        aggregator.terminate()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_schedulers_on_one_postgres_share_the_work_without_running_a_job_twice(
    tmp_path, postgres_server, mesh_env
):
    with postgres_server.database() as url:
        key = ApiKeyStore(Database(url)).create("replicas")[1]
        backends = procs.start("services.backends.main", "backends", tmp_path,
                               mesh_env(url, QNET_DEVICES="local_simulator"))
        aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, mesh_env(url))
        env = mesh_env(url, QNET_BACKENDS_ADDR=backends.address, QNET_AGGREGATOR_ADDR=aggregator.address,
                       QNET_WORKERS="2")
        schedulers = [procs.start("services.scheduler.main", f"scheduler-{i}", tmp_path, env) for i in range(2)]
        try:
            job_ids = submit(schedulers[0].address, key, 20, backends=["local_simulator"])
            job_ids += submit(schedulers[1].address, key, 20, backends=["local_simulator"])
            db = Database(url)
            rows = wait_terminal(db, job_ids, timeout=120)
            assert {rows[j]["status"] for j in job_ids} == {"completed"}
            assert {rows[j]["claims"] for j in job_ids} == {1}
            assert set(terminal_events(db, job_ids).values()) == {1}
            assert len({rows[j]["ran_by"] for j in job_ids}) == 2, "one scheduler did all the work"
            db.close()
        finally:
            for process in (*schedulers, backends, aggregator):
                process.terminate()
