"""The real mesh behind real Envoy, started once per session exactly as `make run` starts it, and again in the
cluster topology of `make run-cluster` (replicas, one adapter service per provider, PostgreSQL): every test that
takes the `mesh` fixture runs against both."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from qnet_common.db import Database
from qnet_common.keys import ApiKeyStore

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEV_KEY = "qnet_e2e_dev_key"
#: The mesh's internal key in these tests (random per run otherwise), so that tests may call as the mesh.
SERVICE_KEY = "qnet_e2e_service_key"
#: Injected so that every documented error can be produced end to end.
FAULTY_DEVICE = "ionq_aria"  # fails every task (not retried)
UNREACHABLE_DEVICE = "ibm_torino"  # unavailable: retried with backoff, then failed over
SLOW_DEVICE = "local_simulator"  # 2-3 s per task: time to cancel a running job
MAINTENANCE_DEVICE = "rigetti_aspen"


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


@dataclass
class RunningMesh:
    url: str
    admin: str
    data_dir: pathlib.Path
    process: subprocess.Popen
    lines: list[str]
    addresses: dict[str, str]
    metrics: dict[str, str] = field(default_factory=dict)
    db_url: str = ""
    topology: str = "single"

    def replicas(self, service: str) -> list[str]:
        """Addresses of the service's replicas (children are named service, service-N or service-role[-N])."""
        return [a for name, a in self.addresses.items() if name == service or name.startswith(f"{service}-")]

    def request(self, method: str, path: str, body: object = None, *, key: str | None = DEV_KEY,
                raw: bytes | None = None, headers: dict | None = None, timeout: float = 120) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, json.loads(response.read() or b"{}"),
                             {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = {"_raw": text.decode(errors="replace")}
            return Reply(error.code, parsed, {k.lower(): v for k, v in error.headers.items()})

    def create_key(self, name: str, **options) -> str:
        store = ApiKeyStore(Database(self.db_url or f"sqlite:///{self.data_dir / 'qnet.db'}"))
        return store.create(name, **options)[1]


def start_mesh(data_dir: pathlib.Path, extra_env: dict[str, str] | None = None, *, cluster: bool = False,
               args: tuple[str, ...] = ()) -> RunningMesh:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        QNET_DATA_DIR=str(data_dir),
        QNET_DEV_API_KEY=DEV_KEY,
        QNET_SERVICE_KEY=SERVICE_KEY,
        QNET_FAULTS=f"{FAULTY_DEVICE}=error,{UNREACHABLE_DEVICE}=unavailable,{SLOW_DEVICE}=slow",
        QNET_DEVICE_STATUS=f"{MAINTENANCE_DEVICE}=maintenance",
        QNET_EXECUTE_WAIT_S="60",
        QNET_GRACE_S="5",
    )
    env.update(extra_env or {})
    log = open(data_dir / "mesh.log", "w")  # noqa: SIM115 - lives as long as the mesh
    process = subprocess.Popen(
        [sys.executable, "-m", "services.mesh", "--ephemeral", *(["--cluster"] if cluster else []), *args],
        cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    found: dict[str, str] = {}

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            match = re.search(r"QNET_MESH_READY url=(\S+) admin=(\S+) (.*)", line)
            if match:
                found.update(url=match.group(1), admin=match.group(2), rest=match.group(3))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 180
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("mesh did not start:\n" + (data_dir / "mesh.log").read_text()[-5000:])
    services, _, metrics = found["rest"].partition("metrics:")
    address = r"([\w-]+)=(\d+\.\d+\.\d+\.\d+:\d+)"
    return RunningMesh(found["url"], found["admin"], data_dir, process, lines, dict(re.findall(address, services)),
                       dict(re.findall(address, metrics)), env.get("QNET_DATABASE_URL", ""),
                       "cluster" if cluster else "single")


def stop_mesh(mesh: RunningMesh) -> int:
    mesh.process.send_signal(signal.SIGTERM)
    try:
        return mesh.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(mesh.process.pid, signal.SIGKILL)
        return -9


@pytest.fixture(scope="session")
def single_mesh(tmp_path_factory) -> RunningMesh:
    """`make run`'s topology: one process per service, SQLite."""
    running = start_mesh(tmp_path_factory.mktemp("mesh"))
    yield running
    stop_mesh(running)


@pytest.fixture(scope="session")
def cluster_mesh(tmp_path_factory, postgres_server) -> RunningMesh:
    """`make run-cluster`'s topology on a database of its own."""
    with postgres_server.database() as url:
        running = start_mesh(tmp_path_factory.mktemp("cluster"), {"QNET_DATABASE_URL": url}, cluster=True)
        yield running
        stop_mesh(running)


@pytest.fixture(scope="session", params=["single", pytest.param("cluster", marks=pytest.mark.postgres)])
def mesh(request) -> RunningMesh:
    return request.getfixturevalue(f"{request.param}_mesh")
