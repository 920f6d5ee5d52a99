"""Faults between services: the scheduler reaches the backends and the aggregator, and Envoy the scheduler, through
loopback proxies that delay, reset and refuse connections in turn. Deadlines hold, retries stay bounded, and every
accepted job ends in a terminal state with a documented outcome within a stated time; none is stuck."""

from __future__ import annotations

import collections
import json
import secrets
import socket
import time
import urllib.error
import urllib.request

import grpc
import pytest
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc

from qnet_common.db import Database
from qnet_common.envoy_config import render_config
from qnet_common.envoy_process import EnvoyProcess
from qnet_common.keys import ApiKeyStore
from services.scheduler.domain.engine import SUBMIT_CHECK_S
from tests import procs
from tests.e2e.conftest import ROOT
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


def env(url: str, tmp_path, **extra: str) -> dict[str, str]:
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


def rest(port: int, method: str, path: str, key: str, body: dict | None = None,
         headers: dict | None = None) -> tuple[int, dict, float]:
    """(status, parsed body, seconds) of one REST call through Envoy; a body that is not JSON fails the test."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/network{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                              **(headers or {})})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw), time.monotonic() - started


def envoy_stat(envoy: EnvoyProcess, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats?filter=^{name}$", timeout=5) as reply:
        line = reply.read().decode().strip()
    return int(line.rsplit(":", 1)[1]) if line else 0


@pytest.mark.slow
def test_faults_between_envoy_and_the_scheduler_leave_clients_documented_answers_and_no_job_lost(
        tmp_path, sqlite_url):
    """Envoy reaches the scheduler through a proxy that delays, resets and refuses in turn, while a client
    submits with an Idempotency-Key (retrying the documented 503s, as qnet's client does) and reads its jobs:
    every answer is the envelope with a documented code, each request answers within Envoy's route timeout, no
    key makes two jobs, Envoy's retries stay within its policy, and every accepted job ends."""
    key = ApiKeyStore(Database(sqlite_url)).create("edge-faults")[1]
    scheduler_port = free_port()
    backends = procs.start("services.backends.main", "backends", tmp_path, env(
        sqlite_url, tmp_path, QNET_DEVICES="ionq_simulator,local_simulator"))
    aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, env(sqlite_url, tmp_path))
    scheduler = procs.start("services.scheduler.main", "scheduler", tmp_path, env(
        sqlite_url, tmp_path, QNET_GRPC_PORT=str(scheduler_port), QNET_AGGREGATOR_ADDR=aggregator.address,
        QNET_EXECUTE_WAIT_S=str(EXECUTE_WAIT_S)))
    cluster = "cluster.qnet_scheduler_v1_ExecutionService"
    with FaultProxy(scheduler.address) as to_scheduler:
        here = tuple(to_scheduler.address.split(":"))
        envoy = EnvoyProcess(render_config(
            listen_host="127.0.0.1", listen_port=0, admin_port=0, descriptor_path=str(ROOT / "gen" / "qnet.pb"),
            upstreams={"qnet.scheduler.v1.ExecutionService": [(here[0], int(here[1]))]},
            stream_upstreams=[("127.0.0.1", free_port())], route_timeout_s=20), workdir=tmp_path / "envoy")
        envoy.start()
        try:
            accepted: dict[str, set[str]] = collections.defaultdict(set)  # idempotency key -> job ids seen
            answers: collections.Counter = collections.Counter()
            slowest = 0.0
            for mode, delay in [("pass", 0.0), ("delay", 0.3), ("reset", 0.0), ("refuse", 0.0), ("delay", 1.0),
                                ("pass", 0.0)]:
                to_scheduler.set(mode, delay)
                phase_end = time.monotonic() + 3
                while time.monotonic() < phase_end:
                    idempotency = secrets.token_hex(6)
                    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16, "return_immediately": True}
                    for _ in range(3):  # the client's retries of a documented 503, with the same key
                        status, reply, seconds = rest(envoy.http_port, "POST", "/execute", key, body,
                                                      {"Idempotency-Key": idempotency})
                        slowest = max(slowest, seconds)
                        answers[(mode, status, reply.get("error", {}).get("code", "ok"))] += 1
                        if status == 200:
                            accepted[idempotency].add(reply["data"]["job_id"])
                            job_id = reply["data"]["job_id"]
                            status, reply, seconds = rest(envoy.http_port, "GET", f"/execute/{job_id}", key)
                            slowest = max(slowest, seconds)
                            answers[(mode, status, reply.get("error", {}).get("code", "ok"))] += 1
                            break
                        time.sleep(0.2)
            to_scheduler.set("pass")
            requests = sum(answers.values())
            retries = envoy_stat(envoy, f"{cluster}.upstream_rq_retry")
            # Every accepted job ends while the services still run (stopped first, a drain would hand the backlog
            # of a fast accept back to the queue with nothing left to run it).
            job_ids = sorted(set().union(*accepted.values()))
            rows = wait_terminal(Database(sqlite_url), job_ids, timeout=SETTLE_S)
        finally:
            envoy.stop()
            for process in (scheduler, aggregator, backends):
                process.terminate()
    print(f"answers {dict(answers)}; Envoy retries {retries} for {requests} requests; slowest {slowest:.2f} s")
    documented = {"ok", "UNAVAILABLE", "DEADLINE_EXCEEDED", "BACKEND_UNAVAILABLE"}
    assert {code for _, _, code in answers} <= documented, answers
    assert all(status in (200, 503, 504) for _, status, _ in answers), answers
    assert {status for mode, status, _ in answers if mode == "pass"} == {200}, answers  # before and after
    assert any(status == 503 for mode, status, _ in answers if mode in ("reset", "refuse")), answers
    assert slowest < 20 + SLACK_S  # Envoy's route timeout bounds every answer, whatever the scheduler does
    assert retries <= 2 * requests  # the route's retry policy: at most two more tries of a request
    assert all(len(ids) == 1 for ids in accepted.values()), "a retried key made a second job"
    assert {rows[j]["status"] for j in job_ids} == {"completed"}
