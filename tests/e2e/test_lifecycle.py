"""`make run`'s launcher: SIGTERM stops every child; a launcher killed outright leaves no orphan either."""

from __future__ import annotations

import os
import pathlib
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
