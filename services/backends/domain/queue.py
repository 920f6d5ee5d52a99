"""A device's bounded task queue: limited concurrency, a depth limit, cancellation and wait estimates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from qnet_common import errors

T = TypeVar("T")


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    status: str  # queued or running
    shots: int
    age_s: float


@dataclass(frozen=True)
class QueueSnapshot:
    queue_depth: int
    running: int
    concurrency: int
    max_queue_depth: int
    avg_execution_time_s: float
    estimated_wait_s: float
    completed_tasks: int
    tasks: tuple[TaskInfo, ...]


@dataclass
class _Task:
    task_id: str
    shots: int
    submitted: float
    status: str = "queued"
    future: asyncio.Future | None = None


class DeviceQueue:
    """Runs blocking device work on an executor, at most `concurrency` tasks at once, FIFO.

    A task beyond `max_queue_depth` waiting tasks is refused with BackendUnavailable (the scheduler fails over).
    Cancelling a queued task removes it; cancelling a running one abandons its result at once (a simulator
    cannot be interrupted mid-run; its thread finishes in the background).
    """

    #: Weight of the newest execution time in the moving average.
    SMOOTHING = 0.2

    def __init__(
        self, device_id: str, executor: Executor, *, concurrency: int = 1, max_queue_depth: int = 100,
        initial_execution_s: float = 0.05,
    ) -> None:
        self.device_id = device_id
        self._executor = executor
        self._concurrency = concurrency
        self._max_depth = max_queue_depth
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, _Task] = {}
        self._avg_exec = initial_execution_s
        self._completed = 0
        self.on_change: Callable[[], None] | None = None

    async def run(self, task_id: str, shots: int, work: Callable[[], T]) -> tuple[T, float, float]:
        """Queues `work`, waits for it; returns (result, queue seconds, execution seconds)."""
        if task_id in self._tasks:
            raise errors.InvalidArgument(f"task id {task_id!r} is already queued on {self.device_id}")
        if self.depth >= self._max_depth:
            raise errors.BackendUnavailable(
                f"{self.device_id}: queue full ({self._max_depth} tasks waiting); retry later or pick another backend"
            )
        task = _Task(task_id, shots, time.monotonic())
        task.future = asyncio.ensure_future(self._execute(task, work))
        self._tasks[task_id] = task
        self._changed()
        try:
            return await asyncio.shield(task.future)
        except asyncio.CancelledError:
            if task.future.cancelled():
                raise errors.TaskCancelled(f"task {task_id} on {self.device_id} was cancelled") from None
            task.future.cancel()
            raise
        finally:
            self._tasks.pop(task_id, None)
            self._changed()

    async def _execute(self, task: _Task, work: Callable[[], T]) -> tuple[T, float, float]:
        async with self._slots:
            task.status = "running"
            self._changed()
            started = time.monotonic()
            queue_s = started - task.submitted
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, work)
            execution_s = time.monotonic() - started
            self._avg_exec += self.SMOOTHING * (execution_s - self._avg_exec)
            self._completed += 1
            return result, queue_s, execution_s

    def cancel_queued(self) -> int:
        """Cancels every task still waiting (running ones go on); returns how many."""
        waiting = [t for t in self._tasks.values() if t.status == "queued" and t.future and not t.future.done()]
        for task in waiting:
            task.future.cancel()
        return len(waiting)

    def cancel(self, task_id: str) -> bool:
        task = self._tasks.get(task_id)
        if task is None or task.future is None or task.future.done():
            return False
        task.future.cancel()
        return True

    def status_of(self, task_id: str) -> str | None:
        """queued or running; None for a task this queue does not hold."""
        task = self._tasks.get(task_id)
        return task.status if task else None

    @property
    def depth(self) -> int:
        return sum(1 for t in self._tasks.values() if t.status == "queued")

    @property
    def running(self) -> int:
        return sum(1 for t in self._tasks.values() if t.status == "running")

    def estimated_wait_s(self) -> float:
        """Seconds until a task submitted now starts: the work ahead of it spread over the slots."""
        ahead = self.depth + self.running
        if ahead < self._concurrency:
            return 0.0
        return (ahead - self._concurrency + 1) * self._avg_exec / self._concurrency

    def snapshot(self) -> QueueSnapshot:
        now = time.monotonic()
        return QueueSnapshot(
            queue_depth=self.depth,
            running=self.running,
            concurrency=self._concurrency,
            max_queue_depth=self._max_depth,
            avg_execution_time_s=self._avg_exec,
            estimated_wait_s=self.estimated_wait_s(),
            completed_tasks=self._completed,
            tasks=tuple(TaskInfo(t.task_id, t.status, t.shots, now - t.submitted) for t in self._tasks.values()),
        )

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
