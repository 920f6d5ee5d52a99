"""The scheduler's use cases: submit, run, wait for, cancel jobs; the worker loop that runs them.

The job store is the only shared state: any replica can accept a job and any replica can run it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from qnet_common import errors
from services.scheduler.domain.jobs import (
    CANCELLED,
    COMPLETED,
    DEFAULT_SHOTS,
    FAILED,
    QUEUED,
    RUNNING,
    TERMINAL,
    BackendRun,
    Job,
    JobRequest,
    Outcome,
    check_batch_size,
    new_batch_id,
    new_job_id,
)
from services.scheduler.domain.planning import Plan, candidates_of, plan_of
from services.scheduler.domain.ports import Aggregator, Assessment, Charge, DeviceRun, Devices, TaskHandle
from services.scheduler.domain.requests import validate_request
from services.scheduler.domain.strategies import Candidate, choose, strategy_named

log = logging.getLogger(__name__)

#: Attempts on one backend for transient failures, and the backoff before each retry (the last one repeated
#: when a job with no other backend waits out its backend's restart, up to SELECT_WAIT_S).
RETRIES = 3
BACKOFF_S = (0.2, 0.5, 1.0)
#: A device task is given up (cancelled, as unavailable) once it runs this long past what its device estimated
#: for its queue and its run, and at least twice the estimate: an emulation that hangs is bounded, while a real
#: provider's queue of hours or days is never cut short.
TASK_OVERRUN_S = 300.0
TASK_OVERRUN_FACTOR = 2.0


def task_limit_s(estimated_wait_s: float, estimated_execution_s: float) -> float:
    """How long a device task may take from its submission before it is given up."""
    return TASK_OVERRUN_FACTOR * (max(estimated_wait_s, 0.0) + max(estimated_execution_s, 0.0)) + TASK_OVERRUN_S


#: The longest a submission's checks (the device list, the circuit's assessment) may take before it is refused
#: as BACKEND_UNAVAILABLE: with POST /execute's wait, it bounds how long any submission takes to answer.
SUBMIT_CHECK_S = 10.0
#: How long a claimed job waits for an eligible backend (transient gaps) before failing, and between looks.
SELECT_WAIT_S = 15.0
SELECT_RETRY_S = 0.5
#: A waiting request reads its job again after WAIT_FIRST_POLL_S, doubling up to WAIT_POLL_S, when other
#: replicas' changes are not announced; when they are, only every WAIT_CHECK_S (a notification lost while the
#: database reconnected).
WAIT_FIRST_POLL_S = 0.01
WAIT_POLL_S = 0.2
WAIT_CHECK_S = 2.0
#: Each poll of a device task waits this long for it to end (the replica answers at once when it does).
POLL_WAIT_S = 20.0
#: One idle worker of the replica looks in the store this often when nothing wakes one (a lease that expired, an
#: announcement missed while the database reconnected).
IDLE_POLL_S = 0.5


#: The share of the drain grace that running jobs get to finish before they are handed back.
DRAIN_SHARE = 0.7
#: How long a stopping engine lets the requests still waiting for jobs answer before it returns.
WAITERS_DRAIN_S = 1.0


class Engine:
    """Use cases over a job store (blocking calls, run in threads), the devices and the aggregator.

    `notified`: every replica's changes reach `announced` (PostgreSQL's notifications), so waiting requests
    need not poll the store."""

    def __init__(
        self, store: Any, devices: Devices, aggregator: Aggregator, *, workers: int = 8, lease_s: float = 30.0,
        on_job: Callable[[str, str, str, float], None] | None = None, notified: bool = False,
    ) -> None:
        self.store = store
        self.devices = devices
        self.aggregator = aggregator
        self.worker_id = f"sched_{secrets.token_hex(4)}"
        self._workers = workers
        self._lease_s = lease_s
        #: Idle workers, each waiting on its own future: a new job wakes one of them, not all (each woken worker
        #: asks the store for work).
        self._sleepers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stopping = False
        self._loops: list[asyncio.Task] = []
        self._running: dict[str, asyncio.Task] = {}
        #: Running jobs whose lease another worker took (this one lost the store for longer than the lease).
        self._lost: set[str] = set()
        #: Requests waiting for a job, woken when this replica records it or any replica announces a change.
        self._waiters: dict[str, set[_Waiter]] = {}
        #: Workers waiting for work; jobs the insert claimed for them (with when), and the ids of hand-offs being
        #: inserted (their `queued` may be announced before the insert returns: they are not in the queue).
        self._idle = 0
        self._handed: collections.deque[tuple[float, Job]] = collections.deque()
        self._handing: set[str] = set()
        #: A job may wait in the queue: one was queued, handed back or claimed since a worker last found the
        #: queue empty. A worker that ends a job looks in the store only then (one transaction per job fewer).
        self._queue_may_hold = True
        self._notified = notified
        self._on_job = on_job or (lambda job_id, status, backend, age_s: None)

    # --- use cases ---------------------------------------------------------------------------------------

    async def validate(self, qasm: str, backends: list[str], strategy: str, shots: int, aggregate: bool = False,
                       aggregation_method: str = "", *, default_strategy: str = "fastest") -> JobRequest:
        """The request's fields checked (requests.validate_request); the aggregator is asked for its methods
        only when the request aggregates or names one."""
        methods = await self.aggregator.methods() if aggregate or aggregation_method else ()
        return validate_request(qasm, backends, strategy, shots, aggregate, aggregation_method, methods,
                                default_strategy=default_strategy)

    async def plan(self, request: JobRequest, *, peek_turn: bool = False) -> Plan:
        """The request checked against the network and what its strategy would pick now; raises
        BACKEND_NOT_FOUND, INVALID_QASM, NO_BACKENDS (or the circuit's own 400), and BACKEND_UNAVAILABLE when
        the checks take over SUBMIT_CHECK_S (slow or unreachable backends). `peek_turn`: a strategy with a
        shared rotation shows the turn the next job would take (POST /estimate); else its first turn."""
        try:
            async with asyncio.timeout(SUBMIT_CHECK_S):
                return await self._plan(request, peek_turn)
        except TimeoutError:
            raise errors.BackendUnavailable(
                f"checking the circuit against the backends took over {SUBMIT_CHECK_S:.0f} s; retry shortly") from None

    async def _plan(self, request: JobRequest, peek_turn: bool) -> Plan:
        known = await self.devices.list()
        by_id = {d.backend: d for d in known}
        unknown = [b for b in request.backends if b not in by_id]
        if unknown:
            raise errors.BackendNotFound(
                f"backend {unknown[0]!r} not found; known backends: {', '.join(sorted(by_id))}",
                backend=unknown[0],
            )
        names = list(request.backends) or [d.backend for d in known]
        assessments = await self.devices.assess(names, request.qasm, request.shots)
        candidates = await self._current_candidates(request, assessments, known)
        turn = 0
        if peek_turn and strategy_named(request.strategy).shared_turn:
            turn = await asyncio.to_thread(self.store.peek_turn, _rotation(candidates))
        return plan_of(request, candidates, assessments, turn)

    async def submit(
        self, owner: str, request: JobRequest, *, request_id: str = "", quota: tuple[int | None, float | None] = (
            None, None), batch_id: str = "",
    ) -> Job:
        plan = await self.plan(request)
        job = Job(new_job_id(), owner, request, QUEUED, time.time(), batch_id=batch_id,
                  assessments={k: vars(v) for k, v in plan.assessments.items()})
        charge = Charge(_today(), plan.shots_needed, plan.cost_needed, *quota) if quota != (None, None) else None
        # A worker of this replica is idle: the insert claims the job for it (no second transaction, no wait
        # for it to look). The reservation is taken before the insert, so idle workers are never promised twice.
        hand = not self._stopping and self._idle > len(self._handed) + len(self._handing)
        if hand:
            self._handing.add(job.job_id)
        try:
            # One transaction: a retry of this request (same request_id) returns the first job, charged once.
            stored, created = await asyncio.to_thread(
                self.store.insert, job, request_id, charge, (self.worker_id, self._lease_s) if hand else None)
        finally:
            self._handing.discard(job.job_id)
        if created:
            self._on_job(stored.job_id, QUEUED, "", 0.0)
            if hand:
                self._handed.append((time.monotonic(), dataclasses.replace(stored, status=RUNNING)))
                self._wake_one()
            else:
                self._queued()
        return stored

    async def submit_batch(self, owner: str, circuits: list[dict], *, request_id: str = "",
                           quota: tuple[int | None, float | None] = (None, None)) -> str:
        """One job per circuit (`qasm`, `backends`, `strategy`, `shots`); a circuit refused at submission is
        recorded as a failed job of the batch, so the batch reports it. A retried request_id returns the first
        batch, unchanged. Returns the batch id."""
        check_batch_size(len(circuits))
        batch_id, created = await asyncio.to_thread(self.store.insert_batch, new_batch_id(), owner, [], request_id)
        if not created:
            return batch_id
        for circuit in circuits:
            try:
                request = await self.validate(circuit["qasm"], circuit["backends"], circuit["strategy"],
                                              circuit["shots"])
                await self.submit(owner, request, batch_id=batch_id, quota=quota)
            except errors.QnetError as error:
                loose = JobRequest(circuit["qasm"], tuple(circuit["backends"]), circuit["strategy"] or "fastest",
                                   circuit["shots"] or DEFAULT_SHOTS)
                await self.reject(owner, loose, error, batch_id)
        return batch_id

    async def reject(self, owner: str, request: JobRequest, error: errors.QnetError, batch_id: str) -> Job:
        """Records a batch circuit refused at submission as a failed job, so the batch reports it."""
        now = time.time()
        job = Job(new_job_id(), owner, request, FAILED, now, batch_id=batch_id, finished_at=now,
                  outcome=Outcome(status=FAILED, error_code=error.code, error_message=error.message))
        await asyncio.to_thread(self.store.insert, job, "")
        return job

    async def get(self, owner: str | None, job_id: str) -> Job:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise errors.JobNotFound(f"job {job_id!r} not found")
        return job

    async def wait(self, job_id: str, timeout: float, *, submitted: Job | None = None) -> Job:
        """Returns the job once terminal, or as it stands after `timeout` seconds, or at once when this
        scheduler is draining and not running the job itself (the caller gets its id, never an error).

        The job is read when the wait starts (unless it is `submitted`, as `submit` just returned it) and
        whenever its change is announced by another replica (`announced`); an outcome this replica records
        comes with the announcement, and is not read back. Without announcements from other replicas (SQLite)
        the store is also read at growing intervals up to WAIT_POLL_S; with them only every WAIT_CHECK_S, in
        case one was missed while the database reconnected."""
        deadline = time.monotonic() + timeout
        delay = WAIT_FIRST_POLL_S
        waiter = _Waiter()
        self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            job = submitted
            while True:
                waiter.changed.clear()  # before the read: a change announced after it wakes the wait below
                if waiter.ended is not None:
                    return waiter.ended
                if job is None:
                    job = await asyncio.to_thread(self.store.get, job_id)
                if job.terminal or time.monotonic() >= deadline or (self._stopping and job_id not in self._running):
                    return job
                # A job this replica runs (or was handed to run), or any job when every change is announced,
                # needs no polling.
                quiet = self._notified or self._runs_here(job_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.changed.wait(), min(WAIT_CHECK_S if quiet else delay,
                                                                      max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, WAIT_POLL_S)
                job = None
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[job_id]

    def _changed(self, job_id: str, ended: Job | None = None) -> None:
        """Wakes the requests waiting for this job; `ended` is the job as this replica just recorded its end."""
        for waiter in self._waiters.get(job_id, ()):
            if ended is not None:
                waiter.ended = ended
            waiter.changed.set()

    def _runs_here(self, job_id: str) -> bool:
        return (job_id in self._running or job_id in self._handing
                or any(job.job_id == job_id for _, job in self._handed))

    def _wake_one(self) -> None:
        """Wakes one idle worker to look for work (a new job, or there may be more)."""
        while self._sleepers:
            sleeper = self._sleepers.popleft()
            if not sleeper.done():
                sleeper.set_result(None)
                return

    def _queued(self) -> None:
        """A job may be waiting in the queue: a worker that ends its job looks, and an idle one is woken."""
        self._queue_may_hold = True
        self._wake_one()

    def _wake_all(self) -> None:
        while self._sleepers:
            self._wake_one()

    async def cancel(self, owner: str | None, job_id: str) -> Job:
        await self.get(owner, job_id)
        job, cancelled = await asyncio.to_thread(self.store.cancel, job_id)
        if not cancelled:
            raise errors.JobAlreadyFinished(
                f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled",
                status=job.status,
            )
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
        self._changed(job_id)
        self._on_job(job_id, CANCELLED, "", time.time() - job.created_at)
        return job

    def announced(self, topic: str, status: str, job_id: str) -> None:
        """A change some replica committed: wakes an idle worker for a new job (not for one this replica already
        runs or was handed), and the requests waiting for a job that ended (nothing else ends a wait)."""
        if topic != "job_updates":
            return
        if status == QUEUED and not self._runs_here(job_id):
            self._queued()
        if status in TERMINAL:
            self._changed(job_id)

    # --- workers -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._worker_loop(i)) for i in range(self._workers)]
        self._loops.append(asyncio.create_task(self._idle_looks()))

    async def _idle_looks(self) -> None:
        """Every IDLE_POLL_S, wakes one idle worker to look for work nothing announced: one claim transaction
        for the replica, not one for each of its idle workers."""
        while not self._stopping:
            await asyncio.sleep(IDLE_POLL_S)
            self._wake_one()

    async def stop(self, grace: float) -> None:
        """Stops claiming; gives running jobs `grace` seconds, then hands the rest back to the queue."""
        self._stopping = True
        for job_id in list(self._waiters):  # requests for jobs this replica does not run answer at once
            self._changed(job_id)
        self._wake_all()
        running = list(self._running.values())
        if running:  # hand back what is unfinished a little before the server's grace ends, so that the
            # requests waiting for these jobs can still answer with the job as it stands
            await asyncio.wait(running, timeout=grace * DRAIN_SHARE)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        while self._handed:  # claimed by inserts, not started: back to the queue for the other replicas
            _, job = self._handed.popleft()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, job.job_id, self.worker_id)
        # The requests still waiting were woken above or when their job was handed back; each reads its job
        # once more and answers. They finish before the caller closes the store under them.
        deadline = time.monotonic() + WAITERS_DRAIN_S
        while self._waiters and time.monotonic() < deadline:
            for job_id in list(self._waiters):
                self._changed(job_id)
            await asyncio.sleep(0.01)

    async def _worker_loop(self, index: int) -> None:
        """Claims and runs jobs until the engine stops. Never ends on an error: it logs and goes on (the
        job's lease protects the job meanwhile). A woken worker looks in the store; one that ended a job looks
        only if a job may be queued (see _queue_may_hold): an expired lease is found by the idle looks."""
        look = True
        while not self._stopping:
            try:
                job = await self._handed_job()
                handed = job is not None
                if not handed and (look or self._queue_may_hold):
                    self._queue_may_hold = False  # before the claim: a job queued meanwhile sets it again
                    job = await asyncio.to_thread(self.store.claim, self.worker_id, self._lease_s)
            except Exception:  # the store is down: keep trying, jobs wait safely in it
                log.exception("claim failed worker=%s", self.worker_id)
                self._queue_may_hold = look = True
                await asyncio.sleep(1.0)
                continue
            if job is None:
                await self._sleep()
                look = True
                continue
            look = False
            if not handed:
                self._queued()  # the queue had this one: there may be more, let one more idle worker look
            try:
                await self._run_claimed(job, fresh=handed or not job.claimed_before)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: the job's lease expires and another worker takes it over
                log.exception("worker=%s index=%d failed on job=%s", self.worker_id, index, job.job_id)

    async def _sleep(self) -> None:
        """Waits, idle, until woken (by a job, or by the idle looks)."""
        sleeper = asyncio.get_running_loop().create_future()
        self._sleepers.append(sleeper)
        self._idle += 1
        try:
            await sleeper
        finally:
            self._idle -= 1
            with contextlib.suppress(ValueError):  # cancelled (the engine stops): not woken, so still queued
                self._sleepers.remove(sleeper)

    async def _handed_job(self) -> Job | None:
        """A job the insert claimed for this replica, if one waits; one that waited past half its lease (every
        worker got busy meanwhile) goes back to the queue instead, where a worker with a fresh lease takes it."""
        while self._handed:
            handed_at, job = self._handed.popleft()
            if time.monotonic() - handed_at < self._lease_s / 2:
                return job
            await asyncio.to_thread(self.store.release, job.job_id, self.worker_id)
            self._queue_may_hold = True
        return None

    async def _run_claimed(self, job: Job, *, fresh: bool = False) -> None:
        """Runs a claimed job and records its outcome. `fresh`: this is the job's first claim (by its own insert,
        or from the queue), so no earlier claim submitted device tasks for it."""
        task = asyncio.create_task(self._execute(job, fresh))
        self._running[job.job_id] = task
        self._on_job(job.job_id, RUNNING, "", time.time() - job.created_at)
        heartbeat = asyncio.create_task(self._heartbeat(job.job_id, task))
        try:
            outcome = await task
        except asyncio.CancelledError:
            heartbeat.cancel()
            if self._stopping:
                await asyncio.to_thread(self.store.release, job.job_id, self.worker_id)
                log.info("released job=%s on shutdown", job.job_id)
            return  # cancelled by the user: the store already says so
        except errors.Unavailable:
            # The job store went away mid-run (a database outage): not the job's fault. The job goes back to the
            # queue once the store is back (its lease protects it meanwhile), and the worker that takes it over
            # reattaches to its device tasks.
            heartbeat.cancel()
            self._running.pop(job.job_id, None)
            log.warning("job=%s handed back: the job store is unreachable", job.job_id)
            await self._release_when_back(job.job_id)
            return
        except Exception:
            log.exception("job=%s failed unexpectedly", job.job_id)
            outcome = Outcome(status=FAILED, error_code="INTERNAL",
                              error_message="the scheduler failed while running this job; it is logged")
        finally:
            self._running.pop(job.job_id, None)
            self._lost.discard(job.job_id)  # also when the job ended just as its lease was lost
            if self._stopping:  # a draining replica's waiters answer once the job is no longer run here
                self._changed(job.job_id)
        try:  # the heartbeat keeps the lease while the outcome is being recorded
            finished_at = await self._record(job.job_id, outcome)
        finally:
            heartbeat.cancel()
        written = finished_at is not None
        if written:  # the requests waiting here get the job as recorded, without reading it back
            self._changed(job.job_id, dataclasses.replace(job, status=outcome.status, outcome=outcome,
                                                          finished_at=finished_at))
            self._on_job(job.job_id, outcome.status, outcome.backend, time.time() - job.created_at)
        log.info("job=%s status=%s backend=%s written=%s", job.job_id, outcome.status, outcome.backend, written)

    #: Waits between attempts to record an outcome while the store refuses (then every RECORD_BACKOFF_S[-1]).
    RECORD_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)

    async def _record(self, job_id: str, outcome: Outcome) -> float | None:
        """Writes the outcome, retrying until the store takes it; returns when it finished, None when the lease
        was lost meanwhile."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(self.store.finish, job_id, self.worker_id, outcome)
            except Exception:
                wait = self.RECORD_BACKOFF_S[min(attempt, len(self.RECORD_BACKOFF_S) - 1)]
                log.exception("recording job=%s status=%s failed; retrying in %.1f s", job_id, outcome.status, wait)
                attempt += 1
                await asyncio.sleep(wait)

    async def _release_when_back(self, job_id: str) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await asyncio.to_thread(self.store.release, job_id, self.worker_id)
                self._queued()
                return
            except Exception:  # still down; the lease lapses meanwhile, which is as good
                await asyncio.sleep(self.RECORD_BACKOFF_S[min(attempt, len(self.RECORD_BACKOFF_S) - 1)])
                attempt += 1

    async def _heartbeat(self, job_id: str, task: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                status = await asyncio.to_thread(self.store.renew, job_id, self.worker_id, self._lease_s)
            except Exception:  # the store is down: try again next beat; the lease may lapse meanwhile
                log.exception("renewing the lease of job=%s failed", job_id)
                continue
            if status != RUNNING:  # cancelled elsewhere, or the lease was lost
                if status is None:
                    log.warning("job=%s: its lease passed to another worker, who takes over its tasks", job_id)
                    self._lost.add(job_id)
                task.cancel()
                return

    # --- running one job ---------------------------------------------------------------------------------

    async def _execute(self, job: Job, fresh: bool) -> Outcome:
        request = job.request
        assessments = {k: Assessment(**v) for k, v in job.assessments.items()}
        deadline = time.monotonic() + SELECT_WAIT_S
        while True:
            try:
                candidates = await self._current_candidates(request, assessments)
                turn = 0
                if strategy_named(request.strategy).shared_turn:
                    turn = await asyncio.to_thread(self.store.next_turn, _rotation(candidates))
                selection = choose(request.strategy, candidates, turn)
                break
            except errors.Unavailable:
                raise  # the job store: the job is handed back (see _run_claimed)
            except errors.QnetError as error:
                # The backends were fit at submission: a moment without one (a replica restarting, a listing that
                # failed) is waited out for a while before the job fails.
                if not (error.transient or isinstance(error, errors.NoBackends)) or time.monotonic() > deadline:
                    return Outcome(status=FAILED, error_code=error.code, error_message=error.message)
                await asyncio.sleep(SELECT_RETRY_S)
        queue_time = time.time() - job.created_at
        # A job claimed before (its scheduler died, drained, or lost the database) may have device tasks: those
        # recorded, and any submitted but not recorded, which the devices are asked for by their ids. A first
        # claim asks for none (a round trip per job).
        takeover = not fresh
        handed = await self._earlier_tasks(job, selection.order) if takeover else {}
        limits = {c.backend: task_limit_s(c.estimated_wait_s, assessments[c.backend].estimated_execution_s
                                          if c.backend in assessments else 0.0) for c in candidates}
        if strategy_named(request.strategy).fan_out:
            outcome = await self._run_all(job, selection.order, assessments, handed, limits, takeover)
        else:
            outcome = await self._run_first(job, selection.order, handed, limits, takeover)
        outcome.selection = selection
        outcome.queue_time_s = queue_time + min((r.queue_time_s for r in outcome.runs), default=0.0)
        outcome.cost = sum(assessments[r.backend].cost for r in outcome.runs if r.status == COMPLETED and
                           r.backend in assessments)
        return outcome

    async def _earlier_tasks(self, job: Job, order: tuple[str, ...]) -> dict[str, TaskHandle]:
        """The device tasks earlier claims of the job submitted: the recorded handles, and for the other
        backends the first attempt's task if a device has it (a claim that died before recording it, or whose
        task ended within its submission, so that it had nothing to record). The strategy may rank the backends
        differently now (a rotation's turn moved on): this claim goes on where the earlier one got to."""
        handed = await asyncio.to_thread(self.store.tasks, job.job_id)
        unrecorded = [b for b in order if b not in handed]
        found = await asyncio.gather(*(self.devices.find(b, _task_id(job, b, 1)) for b in unrecorded))
        handed.update((b, handle) for b, handle in zip(unrecorded, found, strict=True) if handle is not None)
        return handed

    async def _run_first(self, job: Job, order: tuple[str, ...], handed: dict[str, TaskHandle],
                         limits: dict[str, float], takeover: bool) -> Outcome:
        """Runs on the strategy's first choice, failing over down its ranking."""
        runs: list[BackendRun] = []
        if handed:  # an earlier claim got this far: go on from its backend (a failed one keeps the order)
            order = tuple(b for b in order if b in handed) + tuple(b for b in order if b not in handed)
        for backend in order:
            run = await self._run_on(job, backend, limits[backend], handed.get(backend), patient=backend == order[-1],
                                     takeover=takeover)
            runs.append(run)
            if run.status == COMPLETED:
                return Outcome(status=COMPLETED, backend=backend, counts=run.counts, runs=runs,
                               execution_time_s=run.execution_time_s)
            if run.error_code and errors.BY_CODE.get(run.error_code, errors.Internal).request_at_fault:
                break  # the circuit, not the backend, is at fault: failing over would not help
        return self._all_failed(runs)

    async def _run_all(self, job: Job, order: tuple[str, ...], assessments: dict[str, Assessment],
                       handed: dict[str, TaskHandle], limits: dict[str, float], takeover: bool) -> Outcome:
        runs = list(await asyncio.gather(*(self._run_on(job, backend, limits[backend], handed.get(backend),
                                                        patient=len(order) == 1, takeover=takeover)
                                           for backend in order)))
        done = [r for r in runs if r.status == COMPLETED]
        if not done:
            return self._all_failed(runs)
        outcome = Outcome(status=COMPLETED, runs=runs, execution_time_s=max(r.execution_time_s for r in done))
        if len(done) == 1:
            outcome.backend, outcome.counts = done[0].backend, done[0].counts
        if job.request.aggregate:
            try:
                aggregated = await self.devices_aggregate(job, done, assessments)
            except errors.QnetError as error:
                outcome.status, outcome.error_code, outcome.error_message = FAILED, error.code, error.message
                return outcome
            outcome.aggregated_counts = aggregated.counts
            outcome.aggregation_confidence = aggregated.confidence
            outcome.aggregation_method = job.request.aggregation_method
        return outcome

    async def devices_aggregate(self, job: Job, done: list[BackendRun], assessments: dict[str, Assessment]):
        results = [
            (r.backend, r.counts, job.request.shots,
             assessments[r.backend].success_probability if r.backend in assessments else 0.0)
            for r in done
        ]
        return await self.aggregator.aggregate(results, job.request.aggregation_method, job.request.shots)

    @staticmethod
    def _all_failed(runs: list[BackendRun]) -> Outcome:
        detail = "; ".join(f"{r.backend}: {r.error_code}: {r.error_message}" for r in runs)
        return Outcome(status=FAILED, runs=runs, error_code="ALL_BACKENDS_FAILED",
                       error_message=f"all backends failed ({detail})")

    async def _run_on(self, job: Job, backend: str, limit_s: float, handed: TaskHandle | None = None, *,
                      patient: bool = False, takeover: bool = False) -> BackendRun:
        """One backend, with retries of transient failures and backoff; never raises a QnetError.

        Attempt n's task id is the job's, the backend's and n (_task_id), so that a later claim can find it.
        `handed` is a task an earlier claim of this job submitted (its scheduler died or drained): the run
        reattaches to it instead of running the circuit again, unless its replica no longer knows it.
        `takeover`: earlier claims may have submitted later attempts too, so each attempt first
        asks the devices for its task.
        `patient`: the job has no other backend to fail over to, so a submission no replica took (its adapter
        restarting, or handing its queue back as it drains) is retried for up to SELECT_WAIT_S, not just RETRIES
        times; a task that ran and failed is retried RETRIES times either way.
        """
        run = BackendRun(backend=backend, status=RUNNING)
        patient_until = time.monotonic() + (SELECT_WAIT_S if patient else 0.0)
        attempt = 0
        while True:
            attempt += 1
            run.attempts = attempt
            task_id = _task_id(job, backend, attempt)
            try:
                if handed is None and takeover and attempt > 1:  # the first attempt's was looked for already
                    handed = await self.devices.find(backend, task_id)
                result = await self._task(job, backend, task_id, limit_s, handed)
            except _NotSubmitted as refused:
                error, unsubmitted = refused.error, True
            except errors.QnetError as raised:
                error, unsubmitted = raised, False
            else:
                run.status, run.counts = COMPLETED, result.counts
                run.queue_time_s, run.execution_time_s = result.queue_time_s, result.execution_time_s
                run.compiled_depth, run.two_qubit_gates = result.compiled_depth, result.two_qubit_gates
                run.error_code = run.error_message = ""
                return run
            run.error_code, run.error_message = error.code, error.message
            # The task went with its replica, or an earlier claim's submission was withdrawn when that claim's
            # scheduler went away (this claim cancels only by being cancelled itself): run it afresh.
            gone = isinstance(error, errors.TaskCancelled) or (
                handed is not None and isinstance(error, errors.TaskNotFound | errors.BackendUnavailable))
            handed = None
            if gone and attempt <= RETRIES:
                continue
            if not error.transient or self._stopping:
                break
            if attempt >= RETRIES and not (unsubmitted and time.monotonic() < patient_until):
                break
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1])
        run.status = FAILED
        return run

    async def _task(self, job: Job, backend: str, task_id: str, limit_s: float,
                    handle: TaskHandle | None) -> DeviceRun:
        """Submits (unless reattaching to `handle`), records the handle on the job, and waits for the end."""
        if handle is not None and handle.run is not None:
            return handle.run
        if handle is None:
            try:
                handle = await self.devices.submit(backend, job.request.qasm, job.request.shots, task_id)
            except errors.BackendUnavailable as error:
                raise _NotSubmitted(error) from error
            if handle.run is not None:  # ended within its submission: no replica will need to reattach
                return handle.run
            try:
                await asyncio.to_thread(self.store.attach_task, job.job_id, handle)
            except Exception:  # the job still runs; only a takeover would run it again
                log.warning("recording task %s of job=%s failed", handle.task_id, job.job_id, exc_info=True)
        deadline = time.monotonic() + limit_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self.devices.cancel(handle)
                    raise errors.BackendUnavailable(
                        f"{backend}'s task took over {limit_s:.0f}s, far past its device's estimate; given up",
                        backend=backend)
                result = await self.devices.wait(handle, min(POLL_WAIT_S, remaining))
                if result is not None:
                    return result
        except asyncio.CancelledError:
            # Cancelled by the user; a drain, or a lost lease, leaves the task to the next claim.
            if not self._stopping and job.job_id not in self._lost:
                await asyncio.shield(self.devices.cancel(handle))
            raise

    # --- helpers -----------------------------------------------------------------------------------------

    async def _current_candidates(self, request: JobRequest, assessments: dict[str, Assessment],
                                  known: list | None = None) -> list[Candidate]:
        """The candidates by the devices' statuses; when none is eligible by the (briefly cached) list, by a
        fresh one: a job is never refused or failed on a stale status."""
        candidates = candidates_of(request, known or await self.devices.list(), assessments)
        if not any(c.eligible for c in candidates):
            candidates = candidates_of(request, await self.devices.list(fresh=True), assessments)
        return candidates


def _task_id(job: Job, backend: str, attempt: int) -> str:
    """Attempt `attempt`'s device task for the job on the backend: the same for every claim of the job."""
    return f"{job.job_id}.{backend}.{attempt}"


class _Waiter:
    """One request waiting for a job: woken by `changed`; `ended` is the job as this replica recorded its end."""

    __slots__ = ("changed", "ended")

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.ended: Job | None = None


class _NotSubmitted(Exception):
    """A submission no backends replica took (none serves the device now, or the one it reached is draining):
    the task never reached the device."""

    def __init__(self, error: errors.QnetError) -> None:
        super().__init__(error.message)
        self.error = error


def _rotation(candidates: list[Candidate]) -> str:
    """The shared rotation a set of candidates takes turns in (the same set, in any order, is one rotation)."""
    return ",".join(sorted(c.backend for c in candidates))


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")

