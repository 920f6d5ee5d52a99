"""A backends replica leaving hands its queued tasks back as the transient BACKEND_UNAVAILABLE (the scheduler
retries or fails over), lets the running one finish, and takes no new task: a drain is never a device failure."""

from __future__ import annotations

import asyncio
import datetime
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from qnet_common import errors
from services.backends.domain.device import Calibration, Device, DeviceSpec, PriceModel, RunResult
from services.backends.domain.fleet import Fleet
from services.backends.domain.qasm import parse

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


class GatedDevice(Device):
    """Runs only when the test opens the gate."""

    spec = DeviceSpec("gated", "gated", "test", "simulator", 5, None, ("u", "cx"), 1000, True, False, False,
                      Calibration(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), (), (), "none"),
                      PriceModel(0.0, 0.0))

    def __init__(self) -> None:
        self.gate = threading.Event()

    def run(self, circuit, shots, seed=None):
        self.gate.wait(10)
        return RunResult({"00": shots}, shots, 1, 1, 0.0)

    def assess(self, circuit, shots):
        raise NotImplementedError


def test_a_drain_hands_queued_tasks_back_and_lets_the_running_one_finish():
    device = GatedDevice()

    async def scenario() -> tuple[object, object, object]:
        with ThreadPoolExecutor(2) as pool:
            fleet = Fleet({"gated": device}, pool, {})
            circuit = parse(BELL)
            running = asyncio.create_task(fleet.run("gated", circuit, 10, "t-running", None))
            await asyncio.sleep(0.1)
            queued = asyncio.create_task(fleet.run("gated", circuit, 10, "t-queued", None))
            await asyncio.sleep(0.1)
            assert fleet.begin_drain() == 1
            late = asyncio.create_task(fleet.run("gated", circuit, 10, "t-late", None))
            device.gate.set()
            return await asyncio.gather(running, queued, late, return_exceptions=True)

    running, queued, late = asyncio.run(scenario())
    assert running.result.counts == {"00": 10}
    for refused in (queued, late):
        assert isinstance(refused, errors.BackendUnavailable) and refused.transient, refused
        assert "handed the task back" in refused.message


def test_without_a_drain_a_cancelled_task_stays_cancelled():
    device = GatedDevice()

    async def scenario() -> None:
        with ThreadPoolExecutor(2) as pool:
            fleet = Fleet({"gated": device}, pool, {})
            blocker = asyncio.create_task(fleet.run("gated", parse(BELL), 10, "t1", None))
            await asyncio.sleep(0.1)
            queued = asyncio.create_task(fleet.run("gated", parse(BELL), 10, "t2", None))
            await asyncio.sleep(0.1)
            assert fleet.cancel("t2")
            device.gate.set()
            await blocker
            with pytest.raises(errors.TaskCancelled):
                await queued

    asyncio.run(scenario())
