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
