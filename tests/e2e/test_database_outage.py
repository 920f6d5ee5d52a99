"""The whole mesh on PostgreSQL through a database outage, as a REST client sees it: while the database is down
every request answers the documented, retryable 503 UNAVAILABLE (not 500 INTERNAL), and the mesh serves again
by itself within seconds of its return, with the job accepted before the outage intact."""

from __future__ import annotations

import re
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qnet_common.pgserver import Server
from tests.e2e.conftest import start_mesh, stop_mesh
from tests.e2e.test_slice import BELL

#: How soon after PostgreSQL accepts connections again the mesh must answer normally.
RECOVERY_S = 15


@pytest.fixture
def mesh_on_private_postgres(tmp_path):
    server = Server()
    if server.find_or_start(private=True) is None:
        pytest.fail("no PostgreSQL binaries to start a private server (install Debian's postgresql)")
    with server.database() as url:
        mesh = start_mesh(tmp_path, {"QNET_DATABASE_URL": url})
        try:
            yield mesh, server
        finally:
            stop_mesh(mesh)
    server.stop()


def health(mesh, service: str) -> str:
    with grpc.insecure_channel(mesh.addresses[service]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def serving_gauge(mesh, service: str) -> float:
    """The replica's qnet_serving sample, scraped from its metrics port."""
    with urllib.request.urlopen(f"http://{mesh.metrics[service]}/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(re.search(rf'^qnet_serving\{{service="{service}"\}} (\S+)$', text, re.M).group(1))


def wait_for_health(mesh, service: str, wanted: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (found := health(mesh, service)) != wanted:
        assert time.monotonic() < deadline, f"{service} stayed {found}, expected {wanted}"
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_outage_is_a_retryable_503_and_the_mesh_recovers_by_itself(mesh_on_private_postgres):
    mesh, server = mesh_on_private_postgres
    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 20}
    before = mesh.request("POST", "/execute", body)
    assert before.status == 200 and before.body["data"]["status"] == "completed", before.body
    job_id = before.body["data"]["job_id"]

    assert health(mesh, "scheduler") == "SERVING"
    server.halt()
    wait_for_health(mesh, "scheduler", "NOT_SERVING")  # a load balancer takes it out of rotation
    assert serving_gauge(mesh, "scheduler") == 0  # what the QnetNoSchedulerServing alert reads
    for method, path, payload in (("GET", f"/execute/{job_id}", None), ("POST", "/execute", body),
                                  ("GET", "/status", None)):
        started = time.monotonic()
        reply = mesh.request(method, path, payload, timeout=30)
        assert (reply.status, reply.body["error"]["code"]) == (503, "UNAVAILABLE"), (path, reply.body)
        assert time.monotonic() - started < 10, f"{path} took {time.monotonic() - started:.1f} s to answer"

    server.start_again()
    deadline = time.monotonic() + RECOVERY_S
    while (reply := mesh.request("GET", f"/execute/{job_id}")).status != 200:
        assert reply.status == 503, reply.body
        assert time.monotonic() < deadline, f"not serving {RECOVERY_S} s after the database returned"
        time.sleep(0.25)
    assert reply.body["data"]["status"] == "completed"
    wait_for_health(mesh, "scheduler", "SERVING")
    assert serving_gauge(mesh, "scheduler") == 1
    after = mesh.request("POST", "/execute", body)
    assert after.status == 200 and after.body["data"]["status"] == "completed", after.body
