"""What the scheduler needs from the rest of the mesh, as interfaces; adapters implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qnet_common import errors

#: Float sums of prices may land a hair above a limit they meet exactly.
COST_EPSILON = 1e-9


@dataclass(frozen=True)
class DeviceInfo:
    backend: str
    status: str
    num_qubits: int
    estimated_wait_s: float
    max_shots: int


@dataclass(frozen=True)
class Assessment:
    backend: str
    runnable: bool
    reason: str
    cost: float
    estimated_execution_s: float
    success_probability: float
    #: The documented code when the device refuses the circuit itself (a 400), else empty.
    refusal_code: str = ""


@dataclass(frozen=True)
class Charge:
    """A job's reservation against its owner's daily quota (UTC day), made with the job's insert."""

    day: str
    shots: int
    cost: float
    shots_limit: int | None
    cost_limit: float | None

    def check(self, used_shots: int, used_cost: float) -> None:
        """The quota rule: raises QuotaExceeded unless this job fits beside what the owner used today."""
        if self.shots_limit is not None and used_shots + self.shots > self.shots_limit:
            raise errors.QuotaExceeded(
                f"shot quota exceeded: {used_shots} of {self.shots_limit} shots used today (UTC), this job needs"
                f" {self.shots}; wait for tomorrow or ask for a larger quota", used=used_shots,
                limit=self.shots_limit,
            )
        if self.cost_limit is not None and used_cost + self.cost > self.cost_limit + COST_EPSILON:
            raise errors.QuotaExceeded(
                f"cost quota exceeded: {used_cost:.2f} of {self.cost_limit:.2f} USD used today (UTC), this job"
                f" may cost {self.cost:.2f}", used=f"{used_cost:.4f}", limit=self.cost_limit,
            )


@dataclass(frozen=True)
class DeviceRun:
    counts: dict[str, int]
    queue_time_s: float
    execution_time_s: float
    compiled_depth: int
    two_qubit_gates: int


@dataclass(frozen=True)
class TaskHandle:
    """A device task as submitted: enough for any scheduler replica to find it again."""

    backend: str
    task_id: str
    #: The backends replica holding the task.
    address: str
    #: The run, when the task ended within its submission (a quick simulator): nothing to record or poll.
    run: DeviceRun | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Aggregated:
    counts: dict[str, int]
    confidence: float


class Devices(Protocol):
    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        """The devices and their statuses; `fresh` bypasses any cache."""

    async def assess(self, backends: Sequence[str], qasm: str, shots: int) -> dict[str, Assessment]:
        """Raises InvalidQasm for a circuit that does not parse."""

    async def submit(self, backend: str, qasm: str, shots: int, task_id: str) -> TaskHandle:
        """Queues a task, waiting a moment for it to end; raises a QnetError: transient ones
        (BackendUnavailable) may be retried."""

    async def find(self, backend: str, task_id: str) -> TaskHandle | None:
        """The task with this id on whichever replica serving the backend has it (submitted by a claim that
        died before recording the handle), None when no live replica knows it. Its run is set when it
        completed; a failed one raises its error from `wait`."""

    async def wait(self, handle: TaskHandle, timeout: float) -> DeviceRun | None:
        """The run once the task has ended, None while it has not after `timeout` seconds; raises the task's
        QnetError when it failed, TaskNotFound when its replica no longer knows it."""

    async def cancel(self, handle: TaskHandle) -> None: ...


class Aggregator(Protocol):
    async def methods(self) -> tuple[str, ...]:
        """The aggregation methods there are (the aggregator owns the list); () when it cannot be asked."""

    async def aggregate(
        self, results: Sequence[tuple[str, Mapping[str, int], int, float]], method: str, shots: int
    ) -> Aggregated:
        """(backend, counts, shots, fidelity) per backend; raises AggregationFailed when too divergent."""
