"""A device task is waited for as long as its device said its queue and run would take (a real provider's
queue may be hours or days), and given up once it runs far past that estimate."""

from __future__ import annotations

import asyncio
import time

import pytest

from qnet_common.db import Database
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain import engine as engine_module
from services.scheduler.domain.engine import Engine, task_limit_s
from services.scheduler.domain.jobs import COMPLETED, FAILED, JobRequest
from services.scheduler.domain.ports import Assessment, DeviceInfo, DeviceRun, TaskHandle
from tests.unit.scheduler.test_engine_faults import BELL

TASK_S = 1.0  # how long every task of the device below takes


class QueuedDevice:
    """A device whose tasks end TASK_S after submission and which estimates its queue at `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.ends: dict[str, float] = {}
        self.cancelled: list[str] = []

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        return [DeviceInfo("qpu", "online", 5, self.wait_s, 1000)]

    async def assess(self, backends, qasm, shots):
        return {"qpu": Assessment("qpu", True, "", 0.0, 0.0, 1.0)}

    async def submit(self, backend, qasm, shots, task_id):
        self.ends[task_id] = time.monotonic() + TASK_S
        return TaskHandle(backend, task_id, "nowhere")

    async def wait(self, handle, timeout):
        left = self.ends[handle.task_id] - time.monotonic()
        await asyncio.sleep(max(0.0, min(left, timeout)))
        return DeviceRun({"00": 10}, 0.0, TASK_S, 1, 0) if left <= timeout else None

    async def find(self, backend, task_id):
        return None  # keeps no task past its run

    async def cancel(self, handle) -> None:
        self.cancelled.append(handle.task_id)


def run_one(tmp_path, device: QueuedDevice):
    async def scenario():
        engine = Engine(JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}")), device, aggregator=None, workers=1)
        engine.start()
        try:
            job = await engine.submit("key", JobRequest(BELL, ("qpu",), "fastest", 10))
            return await engine.wait(job.job_id, timeout=30)
        finally:
            await engine.stop(grace=1)

    return asyncio.run(scenario())


@pytest.fixture
def short_overrun(monkeypatch):
    """Margins of a tenth of a second, so that the test sees in a second what a real queue shows in hours."""
    monkeypatch.setattr(engine_module, "TASK_OVERRUN_S", 0.1)
    monkeypatch.setattr(engine_module, "BACKOFF_S", (0.0, 0.0, 0.0))


def test_a_task_within_its_devices_queue_estimate_is_waited_for(tmp_path, short_overrun):
    device = QueuedDevice(wait_s=0.6)  # the limit is 2 x 0.6 + 0.1 = 1.3 s: the 1 s task fits
    job = run_one(tmp_path, device)
    assert job.status == COMPLETED and device.cancelled == []


def test_a_task_far_past_its_devices_estimate_is_cancelled_and_reported_unavailable(tmp_path, short_overrun):
    device = QueuedDevice(wait_s=0.0)  # the limit is 0.1 s: every attempt is given up and cancelled
    job = run_one(tmp_path, device)
    assert job.status == FAILED and job.outcome.error_code == "ALL_BACKENDS_FAILED"
    assert job.outcome.runs[0].error_code == "BACKEND_UNAVAILABLE"
    assert "far past its device's estimate" in job.outcome.runs[0].error_message
    assert len(device.cancelled) == len(device.ends) == engine_module.RETRIES


def test_a_queue_of_days_gets_days():
    two_days = 2 * 86_400.0
    assert task_limit_s(two_days, 30.0) >= 2 * (two_days + 30.0)
    assert task_limit_s(0.0, 0.0) == engine_module.TASK_OVERRUN_S
