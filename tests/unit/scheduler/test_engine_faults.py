"""A scheduler's workers survive the job store refusing writes: outcomes are recorded once the store takes
them, and the workers go on running jobs (they used to end silently, leaving the service accepting jobs that
nothing ran)."""

from __future__ import annotations

import asyncio

from qnet_common import errors
from qnet_common.db import Database
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain.engine import Engine
from services.scheduler.domain.jobs import COMPLETED, JobRequest
from services.scheduler.domain.ports import Assessment, DeviceInfo, DeviceRun, TaskHandle

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


class OneDevice:
    """The devices port with one instant, healthy device."""

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        return [DeviceInfo("dev", "online", 5, 0.0, 1000)]

    async def assess(self, backends, qasm, shots):
        return {"dev": Assessment("dev", True, "", 0.0, 0.0, 1.0)}

    async def submit(self, backend, qasm, shots, task_id):
        self.shots = shots
        return TaskHandle(backend, task_id, "nowhere")

    async def wait(self, handle, timeout):
        return DeviceRun({"00": self.shots}, 0.0, 0.0, 1, 0)

    async def find(self, backend, task_id):
        return None  # keeps no task past its run

    async def cancel(self, handle) -> None:
        return None


class FlakyStore(JobStore):
    """A real job store whose first `failures` writes of an outcome fail, as during a database outage."""

    def __init__(self, db: Database, failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    def finish(self, job_id, worker, outcome):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the database went away")
        return super().finish(job_id, worker, outcome)


def test_workers_record_outcomes_after_the_store_recovers_and_keep_running_jobs(tmp_path):
    store = FlakyStore(Database(f"sqlite:///{tmp_path / 'q.db'}"), failures=5)

    async def scenario() -> list[str]:
        engine = Engine(store, OneDevice(), aggregator=None, workers=2, lease_s=30)
        engine.RECORD_BACKOFF_S = (0.01,)
        engine.start()
        try:
            request = JobRequest(BELL, ("dev",), "fastest", 10)
            jobs = [await engine.submit("key", request) for _ in range(6)]
            finished = [await engine.wait(job.job_id, timeout=10) for job in jobs]
        finally:
            await engine.stop(grace=1)
        return [job.status for job in finished]

    assert asyncio.run(scenario()) == [COMPLETED] * 6
    assert store.failures == 0


class StoreDownMidRun(JobStore):
    """A real job store that is unreachable the first time a running job takes its rotation's turn."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.outages = 1

    def next_turn(self, rotation):
        if self.outages > 0:
            self.outages -= 1
            raise errors.Unavailable("the database is unreachable or too slow right now; retry in a few seconds")
        return super().next_turn(rotation)


def test_a_job_store_outage_while_a_job_runs_hands_the_job_back_instead_of_failing_it(tmp_path):
    """It used to end the job FAILED with INTERNAL."""
    store = StoreDownMidRun(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario() -> str:
        engine = Engine(store, OneDevice(), aggregator=None, workers=1, lease_s=30)
        engine.RECORD_BACKOFF_S = (0.01,)
        engine.start()
        try:
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "round_robin", 10))
            return (await engine.wait(job.job_id, timeout=10)).status
        finally:
            await engine.stop(grace=1)

    assert asyncio.run(scenario()) == COMPLETED
    assert store.outages == 0
