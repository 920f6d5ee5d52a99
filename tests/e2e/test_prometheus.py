"""A real Prometheus server scrapes the running mesh with the scrape config the project ships."""

from __future__ import annotations

import collections
import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from services.mesh import TOPOLOGIES
from tests.e2e.test_slice import BELL

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expression: str) -> float:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as reply:
        result = json.loads(reply.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture
def mesh(single_mesh):
    """The shipped scrape config names `make run`'s ports: the single-process topology."""
    return single_mesh


@pytest.fixture
def prometheus(mesh, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus package is not installed (make test-e2e installs it with apt-get)")
    config = SHIPPED.read_text()
    # The shipped config names make run's ports; this mesh picked its own: same jobs, this run's ports.
    for role in TOPOLOGIES["single"]:
        for child, _, default in role.children():
            config = config.replace(f"127.0.0.1:{default}", mesh.metrics[child])
    config = config.replace("127.0.0.1:9901", mesh.admin.removeprefix("http://"))
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
    )
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.mark.slow
def test_every_target_is_up_and_job_counters_rise(mesh, prometheus):
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5) as reply:
                targets = json.loads(reply.read())["data"]["activeTargets"]
        except OSError:
            targets = []
        health = {t["labels"]["instance"]: (t["labels"]["job"], t["health"]) for t in targets}
        if len(health) == len(mesh.metrics) + 1 and {h for _, h in health.values()} == {"up"}:
            break
        assert time.monotonic() < deadline, f"targets not all up: {health}"
        time.sleep(1)
    assert collections.Counter(job for job, _ in health.values()) == {
        "qnet-scheduler": 1, "qnet-backends": 4, "qnet-aggregator": 1, "qnet-network": 1, "qnet-gateway": 1,
        "qnet-envoy": 1}  # one backends adapter service per provider
    finished = 'sum(qnet_scheduler_jobs_finished_total{status="completed"})'
    before = query(prometheus, finished)
    for _ in range(3):
        reply = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 8})
        assert reply.status == 200
    eventually(prometheus, finished, before + 3)
    eventually(prometheus, 'sum(qnet_backend_tasks_total{backend="ionq_simulator",code="OK"})', 3)
    eventually(prometheus, 'sum(qnet_grpc_server_handled_total{method="Execute",code="OK"})', 3)
    eventually(prometheus, "sum(envoy_cluster_upstream_rq_total)", 3)


def eventually(base: str, expression: str, minimum: float, timeout: float = 60) -> None:
    """Waits for the next scrapes to show `expression` at `minimum` or more."""
    deadline = time.monotonic() + timeout
    while (value := query(base, expression)) < minimum:
        assert time.monotonic() < deadline, f"{expression} = {value}, expected at least {minimum}"
        time.sleep(1)
