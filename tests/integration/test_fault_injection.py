"""Faults between services: the scheduler reaches the backends and the aggregator through loopback proxies that
delay, reset and refuse connections in turn. Deadlines hold, retries stay bounded, and every accepted job ends
in a terminal state with a documented outcome within a stated time; none is stuck."""

from __future__ import annotations

import collections
import socket
import time

import grpc
import pytest
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc

from qnet_common.db import Database
from qnet_common.keys import ApiKeyStore
from services.scheduler.domain.engine import SUBMIT_CHECK_S
from tests import procs
from tests.faultproxy import FaultProxy
from tests.integration.test_scheduler_processes import BELL, SERVICE_KEY, wait_terminal

#: After the faults stop, every job must be terminal within this many seconds.
SETTLE_S = 60
#: POST /execute's wait in this test: a blocking call answers within it, plus the submission checks' bound
#: (engine.SUBMIT_CHECK_S) and SLACK_S, whatever the faults.
EXECUTE_WAIT_S = 4
SLACK_S = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(url: str, tmp_path, **extra: str) -> dict[str, str]:  # noqa: ANN001
    return {"QNET_DATABASE_URL": url, "QNET_SERVICE_KEY": SERVICE_KEY, "QNET_DATA_DIR": str(tmp_path),
            "QNET_GRACE_S": "2", **extra}


@pytest.mark.slow
def test_delays_resets_and_refusals_between_services_leave_no_job_stuck(tmp_path, sqlite_url):
    key = ApiKeyStore(Database(sqlite_url)).create("faults")[1]
    backends_port, aggregator_port = free_port(), free_port()
    with FaultProxy(f"127.0.0.1:{backends_port}") as to_backends, \
            FaultProxy(f"127.0.0.1:{aggregator_port}") as to_aggregator:
        backends = procs.start("services.backends.main", "backends", tmp_path, env(
            sqlite_url, tmp_path, QNET_GRPC_PORT=str(backends_port), QNET_ADVERTISE_ADDR=to_backends.address,
            QNET_DEVICES="ionq_simulator,local_simulator"))
        aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, env(
            sqlite_url, tmp_path, QNET_GRPC_PORT=str(aggregator_port)))
        scheduler = procs.start("services.scheduler.main", "scheduler", tmp_path, env(
            sqlite_url, tmp_path, QNET_AGGREGATOR_ADDR=to_aggregator.address, QNET_LEASE_S="3",
            QNET_EXECUTE_WAIT_S=str(EXECUTE_WAIT_S)))
        try:
            metadata = (("authorization", f"Bearer {key}"),)
            job_ids: list[str] = []
            waits: list[float] = []
            with grpc.insecure_channel(scheduler.address) as channel:
                stub = ex_grpc.ExecutionServiceStub(channel)
                both = ["ionq_simulator", "local_simulator"]
                phases = [("pass", 0.0), ("delay", 0.3), ("reset", 0.0), ("refuse", 0.0), ("delay", 1.0),
                          ("pass", 0.0)]
                for mode, delay in phases:
                    for proxy in (to_backends, to_aggregator):
                        proxy.set(mode, delay)
                    phase_end = time.monotonic() + 2.5
                    while time.monotonic() < phase_end:
                        for fields in ({"backends": both, "strategy": "all", "aggregate": True,
                                        "aggregation_method": "median"}, {"backends": both, "strategy": "fastest"}):
                            try:
                                reply = stub.Execute(ex.ExecuteRequest(qasm=BELL, shots=32, return_immediately=True,
                                                                       **fields), metadata=metadata, timeout=30)
                            except grpc.RpcError as error:  # refused at submission: a documented status
                                assert error.code() in (grpc.StatusCode.UNAVAILABLE,), error
                                continue
                            job_ids.append(reply.data.job_id)
                        # A blocking request answers within its wait, whatever happens behind it.
                        started = time.monotonic()
                        try:
                            stub.Execute(ex.ExecuteRequest(qasm=BELL, shots=16, backends=["ionq_simulator"]),
                                         metadata=metadata, timeout=EXECUTE_WAIT_S + SUBMIT_CHECK_S + 30)
                        except grpc.RpcError as error:
                            assert error.code() in (grpc.StatusCode.UNAVAILABLE,), error
                        waits.append(time.monotonic() - started)
                for proxy in (to_backends, to_aggregator):
                    proxy.set("pass")
            assert len(job_ids) >= 20
            rows = wait_terminal(Database(sqlite_url), job_ids, timeout=SETTLE_S)
            outcomes = {}
            db = Database(sqlite_url)
            for row in db.query("SELECT job_id, status, outcome FROM jobs"):
                if row["job_id"] in job_ids:
                    outcomes[row["job_id"]] = (row["status"], row["outcome"])
            statuses = {rows[j]["status"] for j in job_ids}
            assert statuses <= {"completed", "failed"}, statuses
            # Failures are documented backend outcomes, never a scheduler crash (INTERNAL).
            assert not [j for j, (s, o) in outcomes.items() if s == "failed" and '"INTERNAL"' in (o or "")]
            assert sum(1 for j in job_ids if rows[j]["status"] == "completed") >= len(job_ids) // 2
            assert max(waits) < EXECUTE_WAIT_S + SUBMIT_CHECK_S + SLACK_S, waits
            assert to_backends.connections >= 2 and to_aggregator.connections >= 2  # the faults were in the path
            print(f"jobs {len(job_ids)}: {collections.Counter((s, (o or '')[:0]) for s, o in outcomes.values())};"
                  f" longest blocking wait {max(waits):.2f} s; connections {to_backends.connections},"
                  f" {to_aggregator.connections}")
        finally:
            for process in (scheduler, aggregator, backends):
                process.terminate()
