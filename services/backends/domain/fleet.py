"""The devices one backends process serves: their queues, statuses and injected faults."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Run:
    result: RunResult
    queue_time_s: float
    execution_time_s: float


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
    ) -> None:
        self.devices = dict(devices)
        self._reader = reader or executor
        # Readings and refusals: a refused text resubmitted (a retry, a batch) is refused without reading again.
        self._circuits: BytesLRU[Circuit | errors.QnetError] = BytesLRU(CIRCUIT_CACHE_BYTES, _reading_bytes)
        self.queues = {
            device_id: DeviceQueue(device_id, executor, concurrency=1, max_queue_depth=200)
            for device_id in self.devices
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

    def refresh_statuses(self) -> None:
        """Reads the shared statuses once (blocking: run it off the event loop)."""
        if self._load_statuses is None:
            return
        try:
            stored = self._load_statuses()
        except Exception:  # noqa: BLE001 - the store is unreachable: the last statuses read stay in force
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

    async def run(self, device_id: str, circuit: Circuit, shots: int, task_id: str, seed: int | None) -> Run:
        device = self.device(device_id)
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
        if fault == "slow":
            await asyncio.sleep(2 + random.random())
        try:
            result, queue_s, execution_s = await self.queues[device_id].run(
                task_id, shots, lambda: device.run(circuit, shots, seed)
            )
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

    def cancel(self, task_id: str) -> bool:
        return any(queue.cancel(task_id) for queue in self.queues.values())

    def set_status(self, device_id: str, status: str) -> None:
        self.device(device_id)
        _check_status(device_id, status)
        if self._on_status is not None:
            self._on_status(device_id, status)
        self.statuses[device_id] = status


def _reading_bytes(reading: Circuit | errors.QnetError) -> int:
    return reading.approximate_bytes() if isinstance(reading, Circuit) else 200 + len(reading.message)


def _check_status(device_id: str, status: str) -> None:
    if status not in DEVICE_STATUSES:
        raise errors.InvalidArgument(
            f"status {status!r} for {device_id}: expected one of {', '.join(DEVICE_STATUSES)}"
        )
