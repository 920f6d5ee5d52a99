"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOB_TRANSITIONS = Counter(
    "qnet_scheduler_job_transitions_total", "Job state changes made by this scheduler", ["status"]
)
JOBS_FINISHED = Counter(
    "qnet_scheduler_jobs_finished_total", "Jobs that reached a terminal state, by status and backend",
    ["status", "backend"],
)


JOB_SECONDS = Histogram(
    "qnet_scheduler_job_duration_seconds", "Seconds from acceptance to a terminal state, by status", ["status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def record_job(job_id: str, status: str, backend: str, age_s: float) -> None:
    """One job state change made by this scheduler; `age_s` is the time since the job was accepted."""
    JOB_TRANSITIONS.labels(status).inc()
    if status in ("completed", "failed", "cancelled"):
        JOBS_FINISHED.labels(status, backend or "none").inc()
        JOB_SECONDS.labels(status).observe(age_s)
