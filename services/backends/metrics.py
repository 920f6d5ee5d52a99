"""The backends' Prometheus metrics: per-device queue, tasks and execution time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.backends.domain.fleet import Fleet, Run, Task

TASKS = Counter("qnet_backend_tasks_total", "Device tasks finished, by backend and outcome code", ["backend", "code"])
EXECUTION_SECONDS = Histogram(
    "qnet_backend_task_execution_seconds", "Seconds a device spent executing a task", ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_SECONDS = Histogram(
    "qnet_backend_task_queue_seconds", "Seconds a task waited in a device queue", ["backend"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
EXECUTIONS = Counter(
    "qnet_backend_executions_total", "Times a device started executing a task (each real execution once)", ["backend"]
)
QUEUE_DEPTH = Gauge("qnet_backend_queue_depth", "Tasks waiting in a device queue", ["backend"])
RUNNING = Gauge("qnet_backend_running_tasks", "Tasks executing on a device", ["backend"])
ONLINE = Gauge("qnet_backend_online", "1 when the device is online, 0 when offline or in maintenance", ["backend"])


def watch(fleet: Fleet) -> None:
    """Gauges read the live queues and statuses at scrape time; counters follow the tasks."""
    fleet.on_execution = lambda device_id: EXECUTIONS.labels(device_id).inc()
    fleet.on_task_done = _task_done
    for device_id, queue in fleet.queues.items():
        QUEUE_DEPTH.labels(device_id).set_function(lambda q=queue: q.depth)
        RUNNING.labels(device_id).set_function(lambda q=queue: q.running)
        ONLINE.labels(device_id).set_function(lambda d=device_id: float(fleet.statuses[d] == "online"))


def _task_done(task: Task) -> None:
    outcome = task.outcome()
    if isinstance(outcome, Run):
        TASKS.labels(task.device_id, "OK").inc()
        EXECUTION_SECONDS.labels(task.device_id).observe(outcome.execution_time_s)
        QUEUE_SECONDS.labels(task.device_id).observe(outcome.queue_time_s)
    else:
        TASKS.labels(task.device_id, outcome.code).inc()
