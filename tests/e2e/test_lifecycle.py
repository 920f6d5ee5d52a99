"""`make run`'s launcher: SIGTERM stops every child; a launcher killed outright leaves no orphan either."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import time

import pytest

from tests.e2e.conftest import start_mesh


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in pathlib.Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    result = set()
    for pid in pids:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            continue
        if state != "Z":
            result.add(pid)
    return result


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopping_the_launcher_leaves_no_process_behind(tmp_path, how):
    mesh = start_mesh(tmp_path)
    children = descendants(mesh.process.pid)
    assert len(children) >= 6  # five services and Envoy
    if how == "sigterm":
        mesh.process.send_signal(signal.SIGTERM)
        assert mesh.process.wait(timeout=60) == 0
    else:
        mesh.process.send_signal(signal.SIGKILL)
        mesh.process.wait(timeout=10)
    left = wait_gone(children, timeout=30)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{how} left processes behind: {left}"


def child_running(mesh, module: str) -> int:
    for pid in descendants(mesh.process.pid):
        try:
            if module in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        except FileNotFoundError:
            continue
    raise AssertionError(f"no process runs {module}")


@pytest.mark.slow
def test_a_crashed_service_is_restarted_on_its_address_while_the_rest_keep_serving(tmp_path):
    mesh = start_mesh(tmp_path)
    try:
        assert mesh.request("GET", "/aggregate/methods").status == 200
        crashed = child_running(mesh, "services.aggregator.main")
        os.kill(crashed, signal.SIGKILL)
        assert mesh.request("GET", "/status").status == 200  # the others keep serving meanwhile
        deadline = time.monotonic() + 30
        while (reply := mesh.request("GET", "/aggregate/methods", timeout=10)).status != 200:
            assert reply.status == 503, reply.body  # Envoy's documented answer while it is down
            assert time.monotonic() < deadline, "the aggregator was not back within 30 s"
            time.sleep(0.25)
        assert mesh.process.poll() is None, "the launcher stopped the mesh"
        assert child_running(mesh, "services.aggregator.main") != crashed
    finally:
        mesh.process.send_signal(signal.SIGTERM)
        assert mesh.process.wait(timeout=60) == 0


@pytest.mark.slow
def test_a_stopping_mesh_closes_websocket_clients_with_1001(tmp_path):
    import asyncio
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from tests.e2e.conftest import DEV_KEY

    mesh = start_mesh(tmp_path)

    async def scenario() -> int | None:
        async with connect(mesh.url.replace("http://", "ws://") + "/stream") as ws:
            await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["job_updates"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            mesh.process.send_signal(signal.SIGTERM)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=30)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    try:
        code = asyncio.run(scenario())
    finally:
        mesh.process.send_signal(signal.SIGTERM)
        mesh.process.wait(timeout=60)
    assert code == 1001, f"closed with {code} (1006 or None: the connection was cut, not closed)"


@pytest.mark.slow
def test_a_draining_scheduler_answers_a_waiting_execute_with_the_job_and_the_job_still_completes(tmp_path):
    import threading

    from tests.e2e.conftest import SLOW_DEVICE
    from tests.e2e.test_slice import BELL

    # A grace shorter than the slow device's run: the job cannot finish before the scheduler leaves.
    mesh = start_mesh(tmp_path, {"QNET_GRACE_S": "1"})
    try:
        replies = []
        waiting = threading.Thread(target=lambda: replies.append(mesh.request(
            "POST", "/execute", {"qasm": BELL, "backends": [SLOW_DEVICE], "shots": 10},
            headers={"Idempotency-Key": "drain-1"}, timeout=60)))
        waiting.start()
        time.sleep(0.5)  # the job is accepted and running on the slow device
        os.kill(child_running(mesh, "services.scheduler.main"), signal.SIGTERM)
        waiting.join(timeout=60)
        reply = replies[0]
        assert reply.status == 200, reply.body  # the job as it stands, with its id: not a 503
        job_id = reply.body["data"]["job_id"]
        deadline = time.monotonic() + 60
        while (job := mesh.request("GET", f"/execute/{job_id}", timeout=10)).status != 200 or \
                job.body["data"]["status"] != "completed":
            assert time.monotonic() < deadline, f"the job never completed: {job.body}"
            time.sleep(0.5)
    finally:
        mesh.process.send_signal(signal.SIGTERM)
        mesh.process.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.postgres
def test_cluster_mode_without_a_database_url_runs_on_a_postgres_of_its_own_and_stops_it_with_itself(tmp_path):
    """`make run-cluster` on a machine with no server configured: it starts PostgreSQL from initdb in the data
    dir, serves on it, and a SIGTERM stops every replica and that server, leaving nothing behind."""
    mesh = start_mesh(tmp_path, {"QNET_DATABASE_URL": ""}, cluster=True)
    # The data dir asked for (tmp_path/postgres) or, where the postgres user cannot reach it, the stand-in the
    # launcher names (pytest's tmp_path is private to root).
    said = re.search(r"cluster database: PostgreSQL at \S+, data in (\S+)", (tmp_path / "mesh.log").read_text())
    assert said, "the launcher did not say where the cluster's data is"
    pidfile = pathlib.Path(said.group(1)) / "postmaster.pid"
    try:
        assert pidfile.exists(), "no PostgreSQL was started in the data dir"
        postgres = int(pidfile.read_text().split()[0])
        assert alive({postgres})
        assert len(mesh.replicas("scheduler")) == 2 and len(mesh.replicas("backends-local")) == 2
        children = descendants(mesh.process.pid)
        bell = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
        reply = mesh.request("POST", "/execute", {"qasm": bell, "backends": ["local_simulator"], "shots": 100})
        assert (reply.status, reply.body["data"]["status"]) == (200, "completed"), reply.body
    finally:
        mesh.process.send_signal(signal.SIGTERM)
        code = mesh.process.wait(timeout=90)
    assert code == 0
    left = wait_gone(children | {postgres}, timeout=30)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"SIGTERM left processes behind: {left}"
    assert not pidfile.exists(), "the cluster's PostgreSQL was not shut down cleanly"
    if tmp_path not in pidfile.parents:  # a stand-in outside the test's folder: the launcher keeps it, we don't
        shutil.rmtree(pidfile.parent)
