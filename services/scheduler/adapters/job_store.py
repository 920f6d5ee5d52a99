"""The durable job store: SQLite (embedded default) or PostgreSQL, one implementation for both.

Work is shared by row leases: a worker claims a queued job (or one whose lease expired because its
scheduler died) and only the lease holder may record the outcome, so a job never gets two results.
"""

from __future__ import annotations

import dataclasses
import json
import time

from qnet_common import errors
from qnet_common.db import Database, Tx
from qnet_common.events import Event, EventLog
from services.scheduler.domain.jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    TERMINAL,
    BackendRun,
    Job,
    JobRequest,
    Outcome,
    Score,
    Selection,
    abandoned,
)
from services.scheduler.domain.ports import Charge, TaskHandle

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        request TEXT NOT NULL,
        request_id TEXT NOT NULL DEFAULT '',
        batch_id TEXT NOT NULL DEFAULT '',
        created_at {float} NOT NULL,
        started_at {float},
        finished_at {float},
        lease_owner TEXT,
        lease_expires {float},
        claims INTEGER NOT NULL DEFAULT 0,
        outcome TEXT,
        assessments TEXT NOT NULL DEFAULT '{{}}',
        shots INTEGER NOT NULL DEFAULT 0,
        cost {float} NOT NULL DEFAULT 0,
        backend TEXT NOT NULL DEFAULT '',
        ran_by TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_request ON jobs (owner, request_id) WHERE request_id <> ''",
    """CREATE TABLE IF NOT EXISTS batches (
        batch_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        request_id TEXT NOT NULL DEFAULT '',
        created_at {float} NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS batches_request ON batches (owner, request_id) WHERE request_id <> ''",
    """CREATE TABLE IF NOT EXISTS round_robin (
        rotation TEXT PRIMARY KEY,
        turn INTEGER NOT NULL
    )""",
    # The device task each backend of a running job was given: a scheduler taking the job over reattaches.
    """CREATE TABLE IF NOT EXISTS job_tasks (
        job_id TEXT NOT NULL,
        backend TEXT NOT NULL,
        task_id TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY (job_id, backend)
    )""",
    """CREATE TABLE IF NOT EXISTS usage (
        owner TEXT NOT NULL,
        day TEXT NOT NULL,
        shots INTEGER NOT NULL DEFAULT 0,
        cost {float} NOT NULL DEFAULT 0,
        PRIMARY KEY (owner, day)
    )""",
)

def _outcome_to_json(outcome: Outcome) -> str:
    return json.dumps(_plain(outcome))


def _plain(value: object) -> object:
    """A tree of dataclasses as dicts and lists for JSON, sharing its leaves (dataclasses.asdict deep-copies
    every count and string on the way)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value  # strings, numbers, None, and counts (dicts of strings to numbers)


def _outcome_from_json(text: str | None) -> Outcome | None:
    if not text:
        return None
    data = json.loads(text)
    selection = data.pop("selection")
    runs = data.pop("runs")
    outcome = Outcome(**data)
    outcome.runs = [BackendRun(**run) for run in runs]
    if selection:
        selection["order"] = tuple(selection["order"])
        selection["scores"] = tuple(Score(**s) for s in selection["scores"])
        outcome.selection = Selection(**selection)
    return outcome


def _job(row: dict) -> Job:
    return Job(
        job_id=row["job_id"],
        owner=row["owner"],
        request=JobRequest.from_dict(json.loads(row["request"])),
        status=row["status"],
        created_at=row["created_at"],
        batch_id=row["batch_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=_outcome_from_json(row["outcome"]),
        assessments=json.loads(row["assessments"]),
    )


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(SCHEMA)
        self._events = EventLog(db)

    @property
    def events(self) -> EventLog:
        return self._events

    # --- submission ------------------------------------------------------------------------------------

    def insert(self, job: Job, request_id: str = "", charge: Charge | None = None,
               claim_for: tuple[str, float] | None = None) -> tuple[Job, bool]:
        """Stores a queued job; with a request_id already used by this owner, returns that job instead.

        `charge` reserves the job's shots and cost against the owner's daily quota in the same transaction as
        the insert: a retried request (same request_id) is charged once, however many retries race, and a
        refused reservation stores nothing. `claim_for` (worker, lease seconds) also claims the new job for that
        worker in the same transaction, as `claim` would (its events: queued, then running).
        """
        try:
            with self.db.transaction() as tx:
                # The usage row is locked before the retry's lookup: a retry that waited for the first attempt's
                # reservation then finds that attempt's job instead of a quota it spent.
                used = self._lock_usage(tx, job.owner, charge.day) if charge is not None else None
                if request_id:
                    row = tx.one("SELECT * FROM jobs WHERE owner = ? AND request_id = ?", (job.owner, request_id))
                    if row is not None:
                        return _job(row), False
                if charge is not None:
                    charge.check(used["shots"], used["cost"])
                    tx.execute("UPDATE usage SET shots = shots + ?, cost = cost + ? WHERE owner = ? AND day = ?",
                               (charge.shots, charge.cost, job.owner, charge.day))
                self._insert(tx, job, request_id, claim_for)
        except Exception as error:
            if not (request_id and self.db.is_unique_violation(error)):
                raise
            # A concurrent submission with the same request_id committed first: that one is the job.
            rows = self.db.query("SELECT * FROM jobs WHERE owner = ? AND request_id = ?", (job.owner, request_id))
            return _job(rows[0]), False
        return job, True

    def _insert(self, tx: Tx, job: Job, request_id: str, claim_for: tuple[str, float] | None = None) -> None:
        """Inserts the job as it stands, or with `claim_for` (worker, lease seconds) already claimed as `claim`
        would leave it (one statement less than a claim after the insert); its events: its status, then
        running when claimed."""
        outcome = job.outcome
        status, lease_owner, lease_expires, claims, started_at = job.status, None, None, 0, None
        if claim_for is not None:
            worker, lease_s = claim_for
            now = time.time()
            status, lease_owner, lease_expires, claims, started_at = RUNNING, worker, now + lease_s, 1, now
        tx.execute(
            "INSERT INTO jobs (job_id, owner, status, request, request_id, batch_id, created_at, finished_at,"
            " outcome, assessments, shots, lease_owner, lease_expires, claims, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.job_id, job.owner, status, json.dumps(job.request.to_dict()), request_id, job.batch_id,
                job.created_at, job.finished_at, _outcome_to_json(outcome) if outcome else None,
                json.dumps(job.assessments), job.request.shots, lease_owner, lease_expires, claims, started_at,
            ),
        )
        self._event(tx, job.job_id, job.owner, job.status, outcome)
        if claim_for is not None:
            self._event(tx, job.job_id, job.owner, RUNNING, None)

    def insert_batch(self, batch_id: str, owner: str, jobs: list[Job], request_id: str = "") -> tuple[str, bool]:
        """Stores a batch; with a request_id already used by this owner, returns that batch's id instead."""
        existing = "SELECT batch_id FROM batches WHERE owner = ? AND request_id = ?"
        try:
            with self.db.transaction() as tx:
                if request_id:
                    row = tx.one(existing, (owner, request_id))
                    if row is not None:
                        return row["batch_id"], False
                tx.execute("INSERT INTO batches (batch_id, owner, request_id, created_at) VALUES (?, ?, ?, ?)",
                           (batch_id, owner, request_id, time.time()))
                for job in jobs:
                    self._insert(tx, job, "")
        except Exception as error:
            if not (request_id and self.db.is_unique_violation(error)):
                raise
            return self.db.query(existing, (owner, request_id))[0]["batch_id"], False
        return batch_id, True

    # --- reading ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        rows = self.db.query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def status(self, job_id: str) -> str | None:
        rows = self.db.query("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0]["status"] if rows else None

    def batch(self, batch_id: str) -> tuple[str, list[Job]] | None:
        rows = self.db.query("SELECT owner FROM batches WHERE batch_id = ?", (batch_id,))
        if not rows:
            return None
        jobs = self.db.query("SELECT * FROM jobs WHERE batch_id = ? ORDER BY created_at, job_id", (batch_id,))
        return rows[0]["owner"], [_job(r) for r in jobs]

    # --- work sharing ----------------------------------------------------------------------------------

    def claim(self, worker: str, lease_s: float) -> Job | None:
        """Leases the oldest queued job, or one whose lease expired (its scheduler died)."""
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self.db.transaction() as tx:
            # Two walks of the (status, created_at) index, each stopping at its first row: one query with OR
            # would sort every queued job to find the oldest (a backlog of thousands, on every claim).
            found = [tx.one(f"SELECT * FROM jobs WHERE status = ? ORDER BY created_at LIMIT 1{lock}", (QUEUED,)),
                     tx.one(f"SELECT * FROM jobs WHERE status = ? AND lease_expires < ? ORDER BY created_at LIMIT 1"
                            f"{lock}", (RUNNING, now))]
            found = [r for r in found if r is not None]
            if not found:
                return None
            row = min(found, key=lambda r: r["created_at"])
            outcome = abandoned(row["claims"])
            if outcome is not None:
                tx.execute(
                    "UPDATE jobs SET status = ?, outcome = ?, finished_at = ?, lease_owner = NULL WHERE job_id = ?",
                    (FAILED, _outcome_to_json(outcome), now, row["job_id"]),
                )
                self._event(tx, row["job_id"], row["owner"], FAILED, outcome)
                return None
            tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires = ?, claims = claims + 1,"
                " started_at = COALESCE(started_at, ?) WHERE job_id = ?",
                (RUNNING, worker, now + lease_s, now, row["job_id"]),
            )
            if row["status"] == QUEUED:
                self._event(tx, row["job_id"], row["owner"], RUNNING, None)
            claimed_before = row["started_at"] is not None  # every claim sets it, and nothing clears it
            row.update(status=RUNNING, started_at=row["started_at"] or now)
        return dataclasses.replace(_job(row), claimed_before=claimed_before)

    def renew(self, job_id: str, worker: str, lease_s: float) -> str | None:
        """Extends the lease; returns the job's status (cancelled means: stop) or None if the lease is lost."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET lease_expires = ? WHERE job_id = ? AND lease_owner = ? AND status = ?",
                (time.time() + lease_s, job_id, worker, RUNNING),
            )
            if tx.rowcount == 1:
                return RUNNING
            row = tx.one("SELECT status, lease_owner FROM jobs WHERE job_id = ?", (job_id,))
        if row is None or (row["status"] == RUNNING and row["lease_owner"] != worker):
            return None
        return row["status"]

    def finish(self, job_id: str, worker: str, outcome: Outcome) -> float | None:
        """Records the outcome if `worker` still holds the lease and returns its finished_at; None means someone
        else owns the job now."""
        now = time.time()
        with self.db.transaction() as tx:
            row = tx.one(
                "UPDATE jobs SET status = ?, outcome = ?, finished_at = ?, lease_owner = NULL, lease_expires = NULL,"
                " cost = ?, backend = ?, ran_by = ? WHERE job_id = ? AND lease_owner = ? AND status = ?"
                " RETURNING owner",
                (outcome.status, _outcome_to_json(outcome), now, outcome.cost, outcome.backend, worker, job_id,
                 worker, RUNNING),
            )
            if row is None:
                return None
            tx.execute("DELETE FROM job_tasks WHERE job_id = ?", (job_id,))
            self._event(tx, job_id, row["owner"], outcome.status, outcome)
        return now

    def attach_task(self, job_id: str, handle: TaskHandle) -> None:
        """Records the device task a backend of the job runs (the latest attempt replaces earlier ones)."""
        self.db.query(
            "INSERT INTO job_tasks (job_id, backend, task_id, address) VALUES (?, ?, ?, ?) ON CONFLICT"
            " (job_id, backend) DO UPDATE SET task_id = excluded.task_id, address = excluded.address",
            (job_id, handle.backend, handle.task_id, handle.address),
        )

    def tasks(self, job_id: str) -> dict[str, TaskHandle]:
        """The device tasks earlier claims of the job submitted, by backend."""
        rows = self.db.query("SELECT backend, task_id, address FROM job_tasks WHERE job_id = ?", (job_id,))
        return {r["backend"]: TaskHandle(r["backend"], r["task_id"], r["address"]) for r in rows}

    def release(self, job_id: str, worker: str) -> None:
        """Hands a running job back to the queue (graceful shutdown) so another scheduler takes it."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires = NULL, claims = claims - 1"
                " WHERE job_id = ? AND lease_owner = ? AND status = ?",
                (QUEUED, job_id, worker, RUNNING),
            )

    def cancel(self, job_id: str) -> tuple[Job, bool]:
        """Cancels a job that has not finished; returns it and whether this call cancelled it."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
            if row is None:
                raise errors.JobNotFound(f"job {job_id!r} not found")
            if row["status"] in TERMINAL:
                return _job(row), False
            outcome = _outcome_from_json(row["outcome"]) or Outcome(status=CANCELLED)
            outcome.status = CANCELLED
            outcome.error_code, outcome.error_message = "CANCELLED", "cancelled by the user"
            now = time.time()
            tx.execute(
                "UPDATE jobs SET status = ?, outcome = ?, finished_at = ?, lease_owner = NULL WHERE job_id = ?",
                (CANCELLED, _outcome_to_json(outcome), now, job_id),
            )
            tx.execute("DELETE FROM job_tasks WHERE job_id = ?", (job_id,))
            self._event(tx, job_id, row["owner"], CANCELLED, outcome)
            row.update(status=CANCELLED, outcome=_outcome_to_json(outcome), finished_at=now)
        return _job(row), True

    # --- strategies and quotas ---------------------------------------------------------------------------

    def next_turn(self, rotation: str) -> int:
        """An atomic counter per rotation, shared by every scheduler replica (round_robin)."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO round_robin (rotation, turn) VALUES (?, 0)"
                " ON CONFLICT (rotation) DO UPDATE SET turn = round_robin.turn + 1",
                (rotation,),
            )
            return int(tx.one("SELECT turn FROM round_robin WHERE rotation = ?", (rotation,))["turn"])

    def peek_turn(self, rotation: str) -> int:
        """The turn the next job over this rotation will take, without taking it (an estimate's view)."""
        rows = self.db.query("SELECT turn FROM round_robin WHERE rotation = ?", (rotation,))
        return int(rows[0]["turn"]) + 1 if rows else 0

    def _lock_usage(self, tx: Tx, owner: str, day: str) -> dict:
        """The owner's usage of the day, its row locked until the transaction ends (SQLite locks the database)."""
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        tx.execute("INSERT INTO usage (owner, day) VALUES (?, ?) ON CONFLICT (owner, day) DO NOTHING",
                   (owner, day))
        return tx.one(f"SELECT shots, cost FROM usage WHERE owner = ? AND day = ?{lock}", (owner, day))

    # --- events ----------------------------------------------------------------------------------------

    @staticmethod
    def _event(tx: Tx, job_id: str, owner: str, status: str, outcome: Outcome | None) -> None:
        EventLog.append_in(
            tx,
            Event(
                topic="job_updates", status=status, job_id=job_id, owner=owner,
                backend=outcome.backend if outcome else "",
                counts=(outcome.counts or outcome.aggregated_counts) if outcome else {},
                error_code=outcome.error_code if outcome else "",
            ),
        )
