"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter

JOB_TRANSITIONS = Counter(
    "qnet_scheduler_job_transitions_total", "Job state changes made by this scheduler", ["status"]
)
JOBS_FINISHED = Counter(
    "qnet_scheduler_jobs_finished_total", "Jobs that reached a terminal state, by status and backend",
    ["status", "backend"],
)


def record_job(job_id: str, status: str, backend: str) -> None:
    JOB_TRANSITIONS.labels(status).inc()
    if status in ("completed", "failed", "cancelled"):
        JOBS_FINISHED.labels(status, backend or "none").inc()
