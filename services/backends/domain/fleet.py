"""The devices one backends process serves: their queues, statuses and injected faults."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from qnet_common import errors
from qnet_common.cache import BytesLRU
from services.backends.domain.circuit import Circuit
from services.backends.domain.device import DEVICE_STATUSES, Assessment, Device, RunResult
from services.backends.domain.qasm import fingerprint, parse
from services.backends.domain.queue import DeviceQueue

log = logging.getLogger(__name__)

#: Parsed circuits kept for repeated submissions and for assessing one circuit on every device.
CIRCUIT_CACHE_BYTES = 64 << 20
#: Faults an operator or a resilience test can inject per device (QNET_FAULTS=ibm_brisbane=unavailable).
FAULTS = ("unavailable", "error", "slow")
#: Finished tasks are kept this long (and at most MAX_FINISHED_TASKS of them) for callers to collect.
TASK_RETENTION_S = 600.0
MAX_FINISHED_TASKS = 10_000


@dataclass(frozen=True)
class Run:
    result: RunResult
    queue_time_s: float
    execution_time_s: float


@dataclass(eq=False)
class Task:
    """A submitted device task: a handle to poll, as a provider's job or quantum task is."""

    task_id: str
    device_id: str
    work: asyncio.Task = field(repr=False)
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        return self.work.done()

    def outcome(self) -> Run | errors.QnetError:
        """The run, or the documented error that ended the task (only once done)."""
        if self.work.cancelled():
            return errors.TaskCancelled(f"task {self.task_id} on {self.device_id} was cancelled")
        error = self.work.exception()
        if error is None:
            return self.work.result()
        if isinstance(error, errors.QnetError):
            return error
        return errors.BackendExecutionError(f"{self.device_id} failed the task: {error}", backend=self.device_id)


@dataclass(frozen=True)
class Quote:
    """A device's answer to "could you run this, and for how much?" (AssessCircuit)."""

    device_id: str
    runnable: bool
    currency: str
    cost: float = 0.0
    assessment: Assessment | None = None
    reason: str = ""
    #: The documented 400 code when the device refuses the circuit itself.
    refusal_code: str = ""


class Fleet:
    """Routes tasks to devices. Status changes go through `on_status`, which persists and publishes them.

    With `load_statuses` (the shared store), `follow_statuses` reads them again every STATUS_TTL_S, off the
    event loop, so a change made through any replica is seen by every replica; while the store cannot be read,
    the last statuses read stay in force.
    """

    STATUS_TTL_S = 0.1

    def __init__(
        self,
        devices: Mapping[str, Device],
        executor: Executor,
        statuses: Mapping[str, str],
        faults: Mapping[str, str] | None = None,
        on_status: Callable[[str, str], None] | None = None,
        reader: Executor | None = None,
        load_statuses: Callable[[], Mapping[str, str]] | None = None,
        catalogue: Collection[str] = (),
    ) -> None:
        self.devices = dict(devices)
        #: Every device of the network, served here or by another replica: any replica may set its status.
        self.catalogue = tuple(dict.fromkeys([*self.devices, *catalogue]))
        self._reader = reader or executor
        # Readings and refusals: a refused text resubmitted (a retry, a batch) is refused without reading again.
        self._circuits: BytesLRU[Circuit | errors.QnetError] = BytesLRU(CIRCUIT_CACHE_BYTES, _reading_bytes)
        self.queues = {
            device_id: DeviceQueue(device_id, executor, concurrency=device.spec.concurrent_tasks, max_queue_depth=200)
            for device_id, device in self.devices.items()
        }
        self.statuses = {device_id: statuses.get(device_id, "online") for device_id in self.devices}
        for device_id, status in self.statuses.items():
            _check_status(device_id, status)
        self._load_statuses = load_statuses
        self.faults = dict(faults or {})
        for device_id, fault in self.faults.items():
            if fault not in FAULTS:
                raise ValueError(f"fault {fault!r} for {device_id}: expected one of {', '.join(FAULTS)}")
        self._on_status = on_status
        #: Set by begin_drain: no new tasks; queued ones are handed back.
        self.draining = False
        self._tasks: dict[str, Task] = {}
        self._finished_ids: deque[str] = deque()  # oldest first
        #: Called with the device id each time a device starts executing a task (counts real executions).
        self.on_execution: Callable[[str], None] = lambda device_id: None
        #: Called with each task when it ends.
        self.on_task_done: Callable[[Task], None] = lambda task: None

    def refresh_statuses(self) -> None:
        """Reads the shared statuses once (blocking: run it off the event loop)."""
        if self._load_statuses is None:
            return
        try:
            stored = self._load_statuses()
        except Exception:  # the store is unreachable: the last statuses read stay in force
            log.warning("reading device statuses failed; keeping the last ones", exc_info=True)
            return
        for device_id in self.statuses:
            if stored.get(device_id) in DEVICE_STATUSES:
                self.statuses[device_id] = stored[device_id]

    async def follow_statuses(self) -> None:
        """Keeps the statuses as the shared store has them, at most STATUS_TTL_S old; runs until cancelled."""
        while True:
            await asyncio.to_thread(self.refresh_statuses)
            await asyncio.sleep(self.STATUS_TTL_S)

    def device(self, device_id: str) -> Device:
        try:
            return self.devices[device_id]
        except KeyError:
            known = ", ".join(sorted(self.devices))
            raise errors.BackendNotFound(
                f"backend {device_id!r} not found; known backends: {known}", backend=device_id
            ) from None

    async def read(self, qasm: str) -> Circuit:
        """The one reading of a circuit text, shared by every device (off the event loop, cached in bytes)."""
        key = fingerprint(qasm)
        found = self._circuits.get(key)
        if found is None:
            loop = asyncio.get_running_loop()
            try:
                found = await loop.run_in_executor(self._reader, parse, qasm)
            except errors.QnetError as refusal:
                found = refusal
            self._circuits.put(key, found)
        if isinstance(found, errors.QnetError):
            raise type(found)(found.message, **found.metadata)
        return found

    def begin_drain(self) -> int:
        """This replica is leaving: it takes no new task and hands back the queued ones, which fail as the
        transient BACKEND_UNAVAILABLE so that the scheduler runs them elsewhere (a drain is never a device
        failure); running tasks finish. Returns how many were handed back."""
        self.draining = True
        return sum(queue.cancel_queued() for queue in self.queues.values())

    def _handed_back(self, device_id: str) -> errors.BackendUnavailable:
        return errors.BackendUnavailable(
            f"{device_id}: this backends replica is shutting down and handed the task back; retry", backend=device_id)

    def submit(self, device_id: str, circuit: Circuit, shots: int, task_id: str, seed: int | None) -> Task:
        """Queues a task and returns its handle at once; a task id already known returns that task."""
        known = self._tasks.get(task_id)
        if known is not None:
            return known
        self._admit(device_id)
        task = Task(task_id, device_id, asyncio.ensure_future(self._run(device_id, circuit, shots, task_id, seed)))
        task.work.add_done_callback(lambda _: self._finished(task))
        self._tasks[task_id] = task
        return task

    def task(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise errors.TaskNotFound(
                f"task {task_id!r} is unknown to this replica (it restarted, or forgot the finished task)") from None

    async def wait(self, task_id: str, timeout: float) -> Task:
        """The task once it has ended, or as it stands after `timeout` seconds."""
        task = self.task(task_id)
        if not task.done and timeout > 0:
            await asyncio.wait({task.work}, timeout=timeout)
        return task

    def _finished(self, task: Task) -> None:
        task.finished_at = time.monotonic()
        self._finished_ids.append(task.task_id)
        horizon = task.finished_at - TASK_RETENTION_S
        while self._finished_ids and (
            len(self._finished_ids) > MAX_FINISHED_TASKS or self._tasks[self._finished_ids[0]].finished_at < horizon
        ):
            del self._tasks[self._finished_ids.popleft()]
        self.on_task_done(task)

    def task_status(self, task: Task) -> str:
        if task.done:
            return "completed" if isinstance(task.outcome(), Run) else "failed"
        return self.queues[task.device_id].status_of(task.task_id) or "queued"

    def _admit(self, device_id: str) -> None:
        """Refuses a task at once when the device cannot take it now."""
        self.device(device_id)
        if self.draining:
            raise self._handed_back(device_id)
        status = self.statuses[device_id]
        if status != "online":
            raise errors.BackendUnavailable(f"{device_id} is {status}", backend=device_id)
        fault = self.faults.get(device_id)
        if fault == "unavailable":
            raise errors.BackendUnavailable(f"{device_id} is unreachable (injected fault)", backend=device_id)
        if fault == "error":
            raise errors.BackendExecutionError(f"{device_id} failed the task (injected fault)", backend=device_id)

    async def run(self, device_id: str, circuit: Circuit, shots: int, task_id: str, seed: int | None) -> Run:
        """Runs a task and waits for it (submit and wait in one)."""
        self._admit(device_id)
        return await self._run(device_id, circuit, shots, task_id, seed)

    async def _run(self, device_id: str, circuit: Circuit, shots: int, task_id: str, seed: int | None) -> Run:
        device = self.device(device_id)
        slow = self.faults.get(device_id) == "slow"

        def work() -> RunResult:
            log.info("executing task=%s device=%s", task_id, device_id)  # each real execution, once
            self.on_execution(device_id)
            if slow:  # the device itself is slow: the time is spent in its queue slot, as a real one's is
                time.sleep(2 + random.random())
            return device.run(circuit, shots, seed)

        try:
            result, queue_s, execution_s = await self.queues[device_id].run(task_id, shots, work)
        except errors.TaskCancelled:
            if self.draining:
                raise self._handed_back(device_id) from None
            raise
        return Run(result, queue_s, execution_s)

    async def assess(self, device_id: str, circuit: Circuit, shots: int) -> Assessment:
        """Compiles without running, on the readers' threads (never behind device tasks)."""
        device = self.device(device_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, device.assess, circuit, shots)

    async def quote(self, device_id: str, circuit: Circuit, shots: int) -> Quote:
        """Whether the device can run the circuit and what it would cost: a circuit the device refuses (too
        large, an instruction it lacks, shots beyond its limit) is not runnable, with the documented code."""
        price = self.device(device_id).spec.price
        try:
            found = await self.assess(device_id, circuit, shots)
        except (errors.CircuitTooLarge, errors.UnsupportedInstruction, errors.InvalidShots) as error:
            return Quote(device_id, False, price.currency, reason=f"{error.code}: {error.message}",
                         refusal_code=error.code)
        return Quote(device_id, True, price.currency, cost=price.cost(shots, found.estimated_execution_s),
                     assessment=found)

    def cancel(self, task_id: str) -> bool:
        if any(queue.cancel(task_id) for queue in self.queues.values()):
            return True
        task = self._tasks.get(task_id)
        return task is not None and task.work.cancel()  # not yet in its queue

    def set_status(self, device_id: str, status: str) -> None:
        """Stores the status once for every replica (those serving the device see it within STATUS_TTL_S)."""
        if device_id not in self.catalogue:
            self.device(device_id)  # raises BACKEND_NOT_FOUND
        _check_status(device_id, status)
        if self._on_status is not None:
            self._on_status(device_id, status)
        if device_id in self.statuses:
            self.statuses[device_id] = status


def _reading_bytes(reading: Circuit | errors.QnetError) -> int:
    return reading.approximate_bytes() if isinstance(reading, Circuit) else 200 + len(reading.message)


def _check_status(device_id: str, status: str) -> None:
    if status not in DEVICE_STATUSES:
        raise errors.InvalidArgument(
            f"status {status!r} for {device_id}: expected one of {', '.join(DEVICE_STATUSES)}"
        )
