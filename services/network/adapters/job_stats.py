"""Read-only queries over the scheduler's job store, so metrics survive restarts and span replicas."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from qnet_common.db import Database


@dataclass
class BackendStats:
    runs: int = 0
    completed: int = 0
    shots: int = 0
    queue_times: list[float] = field(default_factory=list)
    execution_times: list[float] = field(default_factory=list)


@dataclass
class Stats:
    jobs_by_status: dict[str, int]
    finished_in: dict[int, int]
    backends: dict[str, BackendStats]
    shots_executed: int
    cost_spent: float


class JobStats:
    #: Per-backend figures come from the most recent finished jobs (bounded work per request).
    RECENT_JOBS = 5000

    def __init__(self, db: Database) -> None:
        self._db = db
        self._found_jobs = False

    def _has_jobs(self) -> bool:
        """Whether the scheduler has created its table yet (once it has, the table stays: not asked again)."""
        if not self._found_jobs:
            table = (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
                if self._db.dialect == "sqlite"
                else "SELECT tablename AS name FROM pg_tables WHERE tablename = 'jobs'"
            )
            self._found_jobs = bool(self._db.query(table))
        return self._found_jobs

    def active_jobs(self) -> int:
        if not self._has_jobs():
            return 0
        rows = self._db.query("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')")
        return int(rows[0]["n"])

    def stats(self, windows_min: tuple[int, ...] = (1, 5, 15)) -> Stats:
        if not self._has_jobs():
            return Stats({}, {w: 0 for w in windows_min}, {}, 0, 0.0)
        by_status = {
            r["status"]: int(r["n"])
            for r in self._db.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        }
        now = time.time()
        finished_in = {}
        for window in windows_min:
            rows = self._db.query("SELECT COUNT(*) AS n FROM jobs WHERE finished_at >= ?", (now - 60 * window,))
            finished_in[window] = int(rows[0]["n"])
        totals = self._db.query("SELECT COALESCE(SUM(cost), 0) AS cost FROM jobs WHERE status = 'completed'")
        backends: dict[str, BackendStats] = defaultdict(BackendStats)
        shots_executed = 0
        rows = self._db.query(
            "SELECT shots, outcome FROM jobs WHERE outcome IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (self.RECENT_JOBS,),
        )
        for row in rows:
            outcome = json.loads(row["outcome"])
            for run in outcome.get("runs", []):
                stats = backends[run["backend"]]
                stats.runs += 1
                stats.queue_times.append(run["queue_time_s"])
                if run["status"] == "completed":
                    stats.completed += 1
                    stats.shots += row["shots"]
                    shots_executed += row["shots"]
                    stats.execution_times.append(run["execution_time_s"])
        return Stats(by_status, finished_in, dict(backends), shots_executed, float(totals[0]["cost"]))
