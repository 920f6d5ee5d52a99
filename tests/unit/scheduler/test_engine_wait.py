"""A request waiting for its job is woken when the job ends, not by reading the store over and over: the store
is read when the wait starts and again once the outcome is recorded (on this replica, or announced by another)."""

from __future__ import annotations

import asyncio
import time

from qnet_common import errors
from qnet_common.db import Database
from qnet_common.events import EventHub
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain import engine as engine_module
from services.scheduler.domain.engine import Engine
from services.scheduler.domain.jobs import COMPLETED, JobRequest
from services.scheduler.domain.ports import Assessment, DeviceInfo, DeviceRun, TaskHandle
from services.scheduler.main import follow_announcements

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

    async def find(self, backend, task_id):
        return None  # keeps no task past its run

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
    assert store.reads[job.job_id] <= 2, store.reads  # at the start, and announced completed


def test_on_sqlite_a_job_another_replica_finishes_wakes_the_request_through_the_event_log(tmp_path):
    """SQLite announces nothing: the scheduler hands the engine the job events its hub reads from the log, so a
    request waiting for a job another replica runs is not polled. It used to read the job 10, 20, 40 ms... after
    it started waiting, then every 200 ms (a read per job whenever every worker was busy at submission)."""
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    store = CountingStore(db)

    async def scenario():
        here = Engine(store, SlowDevice(0.0), aggregator=None, workers=1, lease_s=30, notified=True)
        hub = EventHub(store.events)
        follow_announcements(hub, here, "sqlite")
        await hub.start()
        there = Engine(JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}")), SlowDevice(1.0), aggregator=None,
                       workers=1, lease_s=30)
        there.start()  # only the other replica runs jobs, in a process of its own as far as the hub knows
        try:
            job = await here.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return await here.wait(job.job_id, 10)
        finally:
            await there.stop(grace=1)
            await hub.stop()

    job = asyncio.run(scenario())
    assert job.status == COMPLETED
    assert store.reads[job.job_id] == 2, store.reads  # when the wait starts, and once its end is read from the log


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


class ClaimCounting(JobStore):
    """A real store counting its claim transactions, and those that found a job (the hand-off skips them)."""

    looked = 0
    found = 0

    def claim(self, worker, lease_s):
        job = super().claim(worker, lease_s)
        self.looked += 1
        self.found += job is not None
        return job


def test_a_job_submitted_while_a_worker_is_idle_is_handed_to_it_claimed_in_the_insert(tmp_path):
    """The insert takes the job for this replica in the same transaction and gives it to the idle worker: no
    separate claim, and the job's events are still queued, then running, then completed."""
    store = ClaimCounting(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, QuickDevice(), aggregator=None, workers=2, lease_s=30)
        engine.start()
        try:
            jobs = []
            for _ in range(5):
                # A worker is idle only once it sleeps; a job that comes while both are busy (running, or looking
                # in the queue) is queued and claimed, as it should be. Each job here comes when both sleep.
                while engine._idle < 2:
                    await asyncio.sleep(0.01)
                job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
                jobs.append(await engine.wait(job.job_id, 10))
            return jobs
        finally:
            await engine.stop(grace=1)

    jobs = asyncio.run(scenario())
    assert [j.status for j in jobs] == [COMPLETED] * 5
    assert store.found == 0
    for job in jobs:
        statuses = [e.status for e in store.events.since(0, 1000) if e.job_id == job.job_id]
        assert statuses == ["queued", "running", "completed"], statuses


def test_a_worker_that_ends_a_handed_job_does_not_look_in_an_empty_queue(tmp_path, monkeypatch):
    """One job at a time, each handed to an idle worker by its insert: nothing was queued, so the worker that
    ended it goes back to sleep without a claim transaction (there was one per job)."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 30.0)  # no idle looks during the test
    store = ClaimCounting(Database(f"sqlite:///{tmp_path / 'q.db'}"))
    first_looks = asyncio.run(handed_one_at_a_time(Engine(store, QuickDevice(), aggregator=None, workers=2,
                                                          lease_s=30), store, jobs=10))
    assert first_looks == 2  # each worker looked once when it started
    assert store.looked == first_looks


async def handed_one_at_a_time(engine: Engine, store: ClaimCounting, jobs: int) -> int:
    """Runs `jobs` jobs one after another, each submitted while every worker sleeps (so handed by its insert);
    returns the claims made before the first, when each worker looked once as it started."""
    engine.start()
    try:
        while engine._idle < engine._workers:
            await asyncio.sleep(0.01)
        first_looks = store.looked
        for _ in range(jobs):
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            assert (await engine.wait(job.job_id, 10)).status == COMPLETED
            while engine._idle < engine._workers:
                await asyncio.sleep(0.01)
        return first_looks
    finally:
        await engine.stop(grace=1)


def test_a_handed_job_announced_before_its_insert_returns_wakes_no_worker(tmp_path, monkeypatch):
    """PostgreSQL announces the job's `queued` at its commit, and the notification can reach the engine before
    the insert's thread hands the job back to it: the engine took that for a job waiting in the queue, and a
    worker ran a claim transaction for nothing (py-spy showed claims at concurrency 1 on PostgreSQL, where every
    job is handed)."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 30.0)  # no idle looks during the test

    class AnnouncedAtCommit(ClaimCounting):
        engine: Engine | None = None
        loop: asyncio.AbstractEventLoop | None = None

        def insert(self, job, request_id="", charge=None, claim_for=None):
            stored = super().insert(job, request_id, charge, claim_for)
            # The notification, handled on the loop while this thread still returns from the insert.
            self.loop.call_soon_threadsafe(self.engine.announced, "job_updates", "queued", job.job_id)
            time.sleep(0.05)
            return stored

    store = AnnouncedAtCommit(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, QuickDevice(), aggregator=None, workers=2, lease_s=30, notified=True)
        store.engine, store.loop = engine, asyncio.get_running_loop()
        return await handed_one_at_a_time(engine, store, jobs=5)

    first_looks = asyncio.run(scenario())
    assert store.looked == first_looks, f"{store.looked - first_looks} claim transactions for 5 handed jobs"


def test_a_backlog_drains_without_waiting_for_the_idle_looks(tmp_path, monkeypatch):
    """Jobs queued while every worker is busy: each worker that ends a job claims the next one at once, until
    the queue is empty."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 30.0)
    store = ClaimCounting(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, SlowDevice(0.05), aggregator=None, workers=2, lease_s=30)
        engine.start()
        try:
            jobs = [await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10)) for _ in range(12)]
            return await asyncio.gather(*(engine.wait(job.job_id, 5) for job in jobs))
        finally:
            await engine.stop(grace=1)

    jobs = asyncio.run(scenario())
    assert [job.status for job in jobs] == [COMPLETED] * 12
    assert store.found >= 10  # at most the two idle workers were handed a job; the rest came from the queue


def test_a_handed_job_no_worker_took_in_time_goes_back_to_the_queue_and_runs_once(tmp_path):
    """A hand-off is a promise an idle worker keeps at once; if every worker got busy meanwhile and the job
    waited past half its lease, it is handed back (another replica may run it) instead of run late."""
    store = ClaimCounting(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, QuickDevice(), aggregator=None, workers=1, lease_s=0.4)
        engine._idle = 1  # a worker looked idle when the job came, but none runs yet
        job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
        assert store.status(job.job_id) == "running"
        await asyncio.sleep(0.3)  # past half the lease
        engine._idle = 0
        engine.start()
        try:
            return await engine.wait(job.job_id, 10)
        finally:
            await engine.stop(grace=1)

    job = asyncio.run(scenario())
    assert job.status == COMPLETED
    assert store.found == 1  # released by the hand-off, then claimed from the queue


class Restarting(SlowDevice):
    """Backends whose submissions fail as unavailable a number of times each (a replica restarting)."""

    def __init__(self, outages: dict[str, int]) -> None:
        super().__init__(0.0)
        self.outages = dict(outages)
        self.tries: dict[str, int] = {}

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        return [DeviceInfo(b, "online", 5, 0.0, 1000) for b in self.outages]

    async def assess(self, backends, qasm, shots):
        return {b: Assessment(b, True, "", 0.0, 0.0, 1.0) for b in backends}

    async def submit(self, backend, qasm, shots, task_id):
        self.tries[backend] = self.tries.get(backend, 0) + 1
        if self.outages[backend] > 0:
            self.outages[backend] -= 1
            raise errors.BackendUnavailable(f"no live backends replica serves {backend} right now; retry")
        return TaskHandle(backend, task_id, "nowhere", run=DeviceRun({"00": shots}, 0.0, 0.001, 1, 0))


def run_one(tmp_path, device, backends, monkeypatch):
    monkeypatch.setattr(engine_module, "BACKOFF_S", (0.01, 0.02, 0.05))

    async def scenario():
        engine = Engine(JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}")), device, aggregator=None, workers=1)
        engine.start()
        try:
            job = await engine.submit("key", JobRequest(BELL, backends, "ordered", 10))
            return await engine.wait(job.job_id, 30)
        finally:
            await engine.stop(grace=1)

    return asyncio.run(scenario())


def test_a_job_with_nowhere_else_to_go_waits_out_its_backend_restarting(tmp_path, monkeypatch):
    """Its only backend is unavailable for longer than the quick retries (a single adapter replica in a rolling
    restart): the job keeps retrying, up to SELECT_WAIT_S, instead of failing ALL_BACKENDS_FAILED."""
    device = Restarting({"only": 8})
    job = run_one(tmp_path, device, ("only",), monkeypatch)
    assert job.status == COMPLETED and device.tries["only"] == 9


def test_a_job_with_a_failover_leaves_an_unavailable_backend_after_the_quick_retries(tmp_path, monkeypatch):
    device = Restarting({"first": 100, "second": 0})
    job = run_one(tmp_path, device, ("first", "second"), monkeypatch)
    assert job.status == COMPLETED and job.outcome.backend == "second"
    assert device.tries["first"] == 3


class Claims(JobStore):
    """A real store counting every claim (each one a write transaction), found or not."""

    made = 0

    def claim(self, worker, lease_s):
        self.made += 1
        return super().claim(worker, lease_s)


async def idle_engine(store: Claims, *, workers: int) -> tuple[Engine, int]:
    """A started engine whose every worker looked in the store once and went idle; the claims made so far."""
    engine = Engine(store, QuickDevice(), aggregator=None, workers=workers, lease_s=30)
    engine.start()
    while engine._idle < workers:
        await asyncio.sleep(0.005)
    return engine, store.made


def test_a_new_job_wakes_one_idle_worker_not_all_of_them(tmp_path, monkeypatch):
    """Eight idle workers: each job wakes the one it is handed to, which looks in the store once when it is
    done. Waking every worker cost eight claim transactions per job, the scheduler's largest cost per job."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 30.0)  # no idle looks during the test
    store = Claims(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine, looked = await idle_engine(store, workers=8)
        try:
            for _ in range(10):
                job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
                assert (await engine.wait(job.job_id, 10, submitted=job)).status == COMPLETED
            await asyncio.sleep(0.1)
            return looked, store.made - looked
        finally:
            await engine.stop(grace=1)

    looked, claims = asyncio.run(scenario())
    assert looked == 8
    assert claims <= 10, claims  # one look after each job; all eight workers woke for each: 80


def test_a_request_waiting_for_a_job_this_replica_runs_never_reads_the_store(tmp_path):
    """Submitted here and run here: the submission is the job as it starts, the recorded outcome comes with
    the wake-up, and the answer is the job exactly as a later read shows it."""
    store = CountingStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, QuickDevice(), aggregator=None, workers=2, lease_s=30)
        engine.start()
        await asyncio.sleep(0.1)
        try:
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return await engine.wait(job.job_id, 10, submitted=job)
        finally:
            await engine.stop(grace=1)

    job = asyncio.run(scenario())
    assert job.status == COMPLETED and job.outcome.counts == {"00": 10}
    assert store.reads.get(job.job_id, 0) == 0, store.reads
    read = store.get(job.job_id)
    assert (job.finished_at, job.outcome, job.created_at) == (read.finished_at, read.outcome, read.created_at)


def test_an_engine_idle_for_many_polls_keeps_no_more_sleepers_than_workers(tmp_path, monkeypatch):
    """Each idle poll that times out leaves nothing behind: an engine idle for hours must not grow."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 0.01)
    store = JobStore(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine = Engine(store, QuickDevice(), aggregator=None, workers=4, lease_s=30)
        engine.start()
        try:
            await asyncio.sleep(0.5)  # about 50 polls per worker
            kept = len(engine._sleepers)
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return kept, (await engine.wait(job.job_id, 10, submitted=job)).status
        finally:
            await engine.stop(grace=1)

    kept, status = asyncio.run(scenario())
    assert kept <= 4 and status == COMPLETED, kept


def test_idle_workers_look_in_the_store_once_per_idle_poll_not_each_of_them(tmp_path, monkeypatch):
    """Nothing to do: one look every IDLE_POLL_S for the replica (a lease that expired, an announcement missed).
    Each of the eight idle workers looked on its own: 16 write transactions a second of an idle scheduler, and
    as many beside every job at low load."""
    monkeypatch.setattr(engine_module, "IDLE_POLL_S", 0.1)
    store = Claims(Database(f"sqlite:///{tmp_path / 'q.db'}"))

    async def scenario():
        engine, looked = await idle_engine(store, workers=8)
        try:
            await asyncio.sleep(1.0)  # ten idle polls
            idle_looks = store.made - looked
            job = await engine.submit("key", JobRequest(BELL, ("dev",), "fastest", 10))
            return looked, idle_looks, (await engine.wait(job.job_id, 10, submitted=job)).status
        finally:
            await engine.stop(grace=1)

    looked, idle_looks, status = asyncio.run(scenario())
    assert looked >= 8 and status == COMPLETED  # each worker once as it started (and maybe one idle look)
    assert 2 <= idle_looks <= 12, idle_looks  # still looking, once a poll; eight workers on their own: about 80
