"""A job taken over from a scheduler that died (or lost its lease) runs on its devices once: the new claim finds
the tasks the earlier one submitted, recorded or not, by their ids; the earlier claim leaves them alone."""

from __future__ import annotations

import asyncio

from qnet_common import errors
from qnet_common.db import Database
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain.engine import Engine
from services.scheduler.domain.jobs import COMPLETED, JobRequest
from services.scheduler.domain.ports import Assessment, DeviceInfo, DeviceRun, TaskHandle

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
LEASE_S = 0.3


class KeptTasks:
    """Devices that keep every task by id, as a backends replica does: `tasks` maps an id to its state."""

    def __init__(self, backends: tuple[str, ...] = ("dev",), run_s: float = 0.0) -> None:
        self.backends = backends
        self.run_s = run_s
        self.tasks: dict[str, str] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        return [DeviceInfo(b, "online", 5, 0.0, 1000) for b in self.backends]

    async def assess(self, backends, qasm, shots):
        return {b: Assessment(b, True, "", 0.0, 0.0, 1.0) for b in backends}

    async def submit(self, backend, qasm, shots, task_id):
        self.submitted.append(task_id)
        self.tasks[task_id] = "running" if self.run_s else "completed"
        return self._handle(backend, task_id)

    async def find(self, backend, task_id):
        return self._handle(backend, task_id) if task_id in self.tasks else None

    async def wait(self, handle, timeout):
        if self.tasks[handle.task_id] == "cancelled":
            raise errors.TaskCancelled(f"task {handle.task_id} was cancelled")
        await asyncio.sleep(min(self.run_s, timeout))
        return None if self.run_s > timeout else DeviceRun({"00": 10}, 0.0, self.run_s, 1, 0)

    async def cancel(self, handle) -> None:
        self.cancelled.append(handle.task_id)
        self.tasks[handle.task_id] = "cancelled"

    def _handle(self, backend: str, task_id: str) -> TaskHandle:
        ended = self.tasks[task_id] == "completed"
        return TaskHandle(backend, task_id, "replica-1", run=DeviceRun({"00": 10}, 0.0, 0.0, 1, 0) if ended else None)


def take_over(tmp_path, devices: KeptTasks, request: JobRequest, earlier: dict[str, str]) -> tuple[str, str]:
    """A job claimed by a scheduler that died after submitting `earlier` (task suffix -> state) without
    recording any of it, then run by a live one; returns the job's id and final status."""
    store = JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario() -> tuple[str, str]:
        engine = Engine(store, devices, aggregator=None, workers=1, lease_s=LEASE_S)
        job = await engine.submit("key", request)  # no worker is idle yet: the job waits in the queue
        assert store.claim("sched_dead", LEASE_S).job_id == job.job_id
        devices.tasks.update({f"{job.job_id}.{suffix}": state for suffix, state in earlier.items()})
        engine.start()
        try:
            return job.job_id, (await engine.wait(job.job_id, timeout=10)).status
        finally:
            await engine.stop(grace=1)

    return asyncio.run(scenario())


def test_a_taken_over_job_whose_unrecorded_task_completed_is_not_run_again(tmp_path):
    """It used to submit a new task: the circuit ran twice (seen in the cluster fault test)."""
    devices = KeptTasks()
    _, status = take_over(tmp_path, devices, JobRequest(BELL, ("dev",), "fastest", 10), {"dev.1": "completed"})
    assert status == COMPLETED
    assert devices.submitted == []


def test_a_taken_over_job_whose_first_task_was_withdrawn_runs_once_under_the_next_attempts_id(tmp_path):
    devices = KeptTasks()
    job_id, status = take_over(tmp_path, devices, JobRequest(BELL, ("dev",), "fastest", 10),
                               {"dev.1": "cancelled"})
    assert status == COMPLETED
    assert devices.submitted == [f"{job_id}.dev.2"]


def test_a_taken_over_rotation_goes_on_on_the_backend_the_earlier_claim_chose(tmp_path):
    """The rotation's turn has moved on since the earlier claim: the new claim must not pick the other backend
    and run the circuit there too."""
    for earlier in ("a", "b"):
        devices = KeptTasks(("a", "b"))
        _, status = take_over(tmp_path / earlier, devices, JobRequest(BELL, ("a", "b"), "round_robin", 10),
                              {f"{earlier}.1": "completed"})
        assert status == COMPLETED
        assert devices.submitted == [], earlier


class LeaseTaken(JobStore):
    """A real job store in which another worker takes the running job's lease at its first renewal (this one
    lost the database for longer than the lease)."""

    def renew(self, job_id, worker, lease_s):
        self.db.query("UPDATE jobs SET lease_owner = 'sched_other' WHERE job_id = ?", (job_id,))
        return super().renew(job_id, worker, lease_s)


def test_a_worker_that_lost_its_lease_leaves_the_device_task_to_the_new_owner(tmp_path):
    """It used to cancel the task as if the user had, under the worker that had taken it over."""
    devices = KeptTasks(run_s=5.0)
    store = LeaseTaken(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario() -> None:
        engine = Engine(store, devices, aggregator=None, workers=1, lease_s=LEASE_S)
        engine.start()
        try:
            await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            for _ in range(100):  # the first renewal comes a third of a lease in
                await asyncio.sleep(0.05)
                if not engine._running and devices.submitted:
                    break
        finally:
            await engine.stop(grace=1)

    asyncio.run(scenario())
    assert len(devices.submitted) == 1
    assert devices.cancelled == []


class Probed(KeptTasks):
    """Devices counting the probes for tasks an earlier claim would have submitted."""

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[str] = []

    async def find(self, backend, task_id):
        self.probes.append(task_id)
        return await super().find(backend, task_id)


def test_a_job_claimed_from_the_queue_for_the_first_time_is_not_looked_for_on_its_devices(tmp_path):
    """No earlier claim can have submitted its tasks: asking every device for them cost a GetTask round trip per
    job, answered NOT_FOUND, whenever every worker was busy at submission (the throughput rows)."""
    devices = Probed()
    store = JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario() -> str:
        engine = Engine(store, devices, aggregator=None, workers=1, lease_s=LEASE_S)
        job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))  # no worker yet: queued
        engine.start()
        try:
            return (await engine.wait(job.job_id, timeout=10)).status
        finally:
            await engine.stop(grace=1)

    assert asyncio.run(scenario()) == COMPLETED
    assert len(devices.submitted) == 1
    assert devices.probes == []


def test_a_job_released_by_a_draining_scheduler_is_still_looked_for_on_its_devices(tmp_path):
    """A claim handed back (a drain, a database outage) may have left a task running: the next claim asks."""
    devices = Probed()
    store = JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario() -> tuple[str, str]:
        engine = Engine(store, devices, aggregator=None, workers=1, lease_s=LEASE_S)
        job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
        store.claim("sched_draining", LEASE_S)
        devices.tasks[f"{job.job_id}.dev.1"] = "completed"  # it submitted, then drained before recording
        store.release(job.job_id, "sched_draining")
        engine.start()
        try:
            return job.job_id, (await engine.wait(job.job_id, timeout=10)).status
        finally:
            await engine.stop(grace=1)

    job_id, status = asyncio.run(scenario())
    assert status == COMPLETED
    assert devices.submitted == []
    assert devices.probes == [f"{job_id}.dev.1"]
