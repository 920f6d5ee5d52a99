"""A request waiting for its job is woken when the job ends, not by reading the store over and over: the store
is read when the wait starts and again once the outcome is recorded (on this replica, or announced by another)."""

from __future__ import annotations

import asyncio

from qnet_common.db import Database
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain.engine import Engine
from services.scheduler.domain.jobs import COMPLETED, JobRequest
from services.scheduler.domain.ports import Assessment, DeviceInfo, DeviceRun, TaskHandle

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


class SlowDevice:
    """One healthy device whose tasks take `run_s` each."""

    def __init__(self, run_s: float) -> None:
        self.run_s = run_s

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        return [DeviceInfo("dev", "online", 5, 0.0, 1000)]

    async def assess(self, backends, qasm, shots):
        return {"dev": Assessment("dev", True, "", 0.0, 0.0, 1.0)}

    async def submit(self, backend, qasm, shots, task_id):
        return TaskHandle(backend, task_id, "nowhere")

    async def wait(self, handle, timeout):
        await asyncio.sleep(self.run_s)
        return DeviceRun({"00": 10}, 0.0, self.run_s, 1, 0)

    async def cancel(self, handle) -> None:
        return None


class CountingStore(JobStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reads: dict[str, int] = {}

    def get(self, job_id):
        self.reads[job_id] = self.reads.get(job_id, 0) + 1
        return super().get(job_id)


def test_a_waiting_request_reads_its_job_when_the_wait_starts_and_when_it_ends(tmp_path):
    """One replica whose every change is announced: its own records wake the requests waiting here."""
    store = CountingStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        # One worker: the second job queues behind the first for a second, then runs for another.
        engine = Engine(store, SlowDevice(1.0), aggregator=None, workers=1, lease_s=30, notified=True)
        engine.start()
        try:
            request = JobRequest(BELL, ("dev",), "fastest", 10)
            first = await engine.submit("key", request)
            second = await engine.submit("key", request)
            return await asyncio.gather(engine.wait(first.job_id, 10), engine.wait(second.job_id, 10))
        finally:
            await engine.stop(grace=1)

    first, second = asyncio.run(scenario())
    assert (first.status, second.status) == (COMPLETED, COMPLETED)
    # When the wait starts and when the job ends, plus at most one safety read (WAIT_CHECK_S, 2 s) over the
    # second job's two seconds; polling read it 11 times.
    assert store.reads[first.job_id] <= 2, store.reads
    assert store.reads[second.job_id] <= 3, store.reads


def test_a_job_another_replica_finishes_wakes_the_request_when_announced(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    store = CountingStore(db)

    async def scenario():
        here = Engine(store, SlowDevice(0.0), aggregator=None, workers=1, lease_s=30, notified=True)
        # Only the other replica runs jobs; what it records is announced (as PostgreSQL's notifications do).
        there = Engine(JobStore(db), SlowDevice(1.0), aggregator=None, workers=1, lease_s=30,
                       on_job=lambda job_id, status, backend, age_s: here.announced("job_updates", status, job_id))
        there.start()
        try:
            job = await here.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return await here.wait(job.job_id, 10)
        finally:
            await there.stop(grace=1)

    job = asyncio.run(scenario())
    assert job.status == COMPLETED
    assert store.reads[job.job_id] <= 3, store.reads  # at the start, announced running, announced completed


def test_without_announcements_a_queued_job_is_polled_and_a_running_one_is_not(tmp_path):
    """SQLite: another replica may take a queued job without a word, so the wait reads the store again (at most
    every WAIT_POLL_S); once this replica runs the job, its own record wakes the wait."""
    store = CountingStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, SlowDevice(1.0), aggregator=None, workers=1, lease_s=30)
        request = JobRequest(BELL, ("dev",), "fastest", 10)
        job = await engine.submit("key", request)
        waiting = asyncio.create_task(engine.wait(job.job_id, 10))
        await asyncio.sleep(1.0)  # queued: nobody runs it yet
        queued_reads = store.reads[job.job_id]
        engine.start()
        try:
            return queued_reads, await waiting
        finally:
            await engine.stop(grace=1)

    queued_reads, job = asyncio.run(scenario())
    assert job.status == COMPLETED
    assert 5 <= queued_reads <= 12, queued_reads  # 10, 20, 40... ms, then every 200 ms
    assert store.reads[job.job_id] - queued_reads <= 3, store.reads  # while it ran: woken by its own record


class QuickDevice(SlowDevice):
    """A device whose tasks end within their submission: the handle carries the run."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.polls = 0

    async def submit(self, backend, qasm, shots, task_id):
        return TaskHandle(backend, task_id, "nowhere", run=DeviceRun({"00": shots}, 0.0, 0.001, 1, 0))

    async def wait(self, handle, timeout):
        self.polls += 1
        return await super().wait(handle, timeout)


class AttachCounting(JobStore):
    attached = 0

    def attach_task(self, job_id, handle):
        self.attached += 1
        return super().attach_task(job_id, handle)


def test_a_task_that_ends_within_its_submission_is_neither_polled_nor_recorded_as_a_handle(tmp_path):
    """The handle exists so that another replica can reattach to a running task; one that has already ended
    needs neither the record nor a poll (one database write and one RPC fewer per job)."""
    store = AttachCounting(Database(f"sqlite:///{tmp_path / 'q.db'}"))
    device = QuickDevice()

    async def scenario():
        engine = Engine(store, device, aggregator=None, workers=1, lease_s=30)
        engine.start()
        try:
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return await engine.wait(job.job_id, 10)
        finally:
            await engine.stop(grace=1)

    job = asyncio.run(scenario())
    assert job.status == COMPLETED and job.outcome.counts == {"00": 10}
    assert (device.polls, store.attached) == (0, 0)
