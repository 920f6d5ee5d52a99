"""A device queue: bounded concurrency and depth, FIFO, cancellation, wait estimates."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from qnet_common import errors
from services.backends.domain.queue import DeviceQueue


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


def blocking(gate: threading.Event, value: str):
    def work() -> str:
        gate.wait(5)
        return value
    return work


async def test_tasks_run_one_at_a_time_in_order_and_report_queue_time(executor):
    queue = DeviceQueue("dev", executor, concurrency=1)
    gate = threading.Event()
    first = asyncio.create_task(queue.run("t1", 10, blocking(gate, "a")))
    second = asyncio.create_task(queue.run("t2", 10, lambda: "b"))
    await asyncio.sleep(0.05)
    snap = queue.snapshot()
    assert (snap.running, snap.queue_depth) == (1, 1)
    assert [t.status for t in snap.tasks] == ["running", "queued"]
    gate.set()
    (a, queue_a, _), (b, queue_b, _) = await asyncio.gather(first, second)
    assert (a, b) == ("a", "b")
    assert queue_b >= 0.04 > queue_a
    assert queue.snapshot().completed_tasks == 2


async def test_a_full_queue_refuses_work_as_unavailable(executor):
    queue = DeviceQueue("dev", executor, concurrency=1, max_queue_depth=1)
    gate = threading.Event()
    running = asyncio.create_task(queue.run("t1", 1, blocking(gate, "a")))
    await asyncio.sleep(0.02)
    waiting = asyncio.create_task(queue.run("t2", 1, lambda: "b"))
    await asyncio.sleep(0.02)
    with pytest.raises(errors.BackendUnavailable):
        await queue.run("t3", 1, lambda: "c")
    gate.set()
    await asyncio.gather(running, waiting)


async def test_cancelling_a_queued_task_removes_it_and_tells_its_caller(executor):
    queue = DeviceQueue("dev", executor, concurrency=1)
    gate = threading.Event()
    running = asyncio.create_task(queue.run("t1", 1, blocking(gate, "a")))
    queued = asyncio.create_task(queue.run("t2", 1, lambda: "b"))
    await asyncio.sleep(0.02)
    assert queue.cancel("t2")
    with pytest.raises(errors.TaskCancelled):
        await queued
    assert queue.snapshot().queue_depth == 0
    assert not queue.cancel("unknown")
    gate.set()
    assert (await running)[0] == "a"


async def test_estimated_wait_grows_with_the_work_ahead(executor):
    queue = DeviceQueue("dev", executor, concurrency=1, initial_execution_s=2.0)
    assert queue.estimated_wait_s() == 0.0
    gate = threading.Event()
    tasks = [asyncio.create_task(queue.run(f"t{i}", 1, blocking(gate, "x"))) for i in range(3)]
    await asyncio.sleep(0.05)
    assert queue.estimated_wait_s() == pytest.approx(6.0)
    gate.set()
    await asyncio.gather(*tasks)
