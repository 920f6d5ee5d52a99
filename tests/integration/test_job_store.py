"""The job store, the same suite on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qnet_common import errors
from qnet_common.db import Database
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.domain.jobs import (
    COMPLETED,
    MAX_CLAIMS,
    BackendRun,
    Job,
    JobRequest,
    Outcome,
    Score,
    Selection,
    new_job_id,
)
from services.scheduler.domain.ports import Charge

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


def _job(owner: str = "key_a", created: float | None = None) -> Job:
    request = JobRequest(BELL, ("local_simulator",), "fastest", 1024)
    return Job(new_job_id(), owner, request, "queued", created or time.time())


@pytest.fixture
def store(db) -> JobStore:
    return JobStore(db)


def test_a_stored_job_reads_back_the_same(store):
    job = _job()
    store.insert(job)
    found = store.get(job.job_id)
    assert (found.job_id, found.owner, found.status, found.request) == (job.job_id, "key_a", "queued", job.request)


def test_a_recorded_outcome_reads_back_equal_in_every_part(store):
    job = _job()
    store.insert(job)
    store.claim("w", 30)
    outcome = Outcome(
        status=COMPLETED, backend="b", counts={"00": 510, "11": 514}, aggregated_counts={"00": 3},
        runs=[BackendRun("b", COMPLETED, {"00": 510, "11": 514}, 0.01, 0.02, 3, 1, 1),
              BackendRun("c", "failed", attempts=3, error_code="BACKEND_UNAVAILABLE", error_message="down")],
        selection=Selection("fastest", "estimated_wait_s", "shortest wait", ("b", "c"),
                            (Score("b", 0.1, True), Score("c", 2.0, False, "offline"))),
        aggregation_confidence=0.9, aggregation_method="weighted_average", queue_time_s=0.5,
        execution_time_s=0.02, cost=1.25,
    )
    finished_at = store.finish(job.job_id, "w", outcome)
    found = store.get(job.job_id)
    assert found.outcome == outcome and found.finished_at == finished_at and found.status == COMPLETED


def test_a_retried_submission_with_the_same_request_id_returns_the_first_job(store):
    first, created = store.insert(_job(), request_id="req-1")
    again, created_again = store.insert(_job(), request_id="req-1")
    other_owner, created_other = store.insert(_job(owner="key_b"), request_id="req-1")
    assert created and not created_again and created_other
    assert again.job_id == first.job_id
    assert other_owner.job_id != first.job_id


def test_concurrent_retries_with_one_request_id_make_one_job(db_url):
    stores = [JobStore(Database(db_url)) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: s.insert(_job(), request_id="same"), stores))
    assert len({job.job_id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_claim_leases_the_oldest_job_once(store):
    old, new = _job(created=time.time() - 10), _job()
    store.insert(new)
    store.insert(old)
    assert store.claim("w1", 30).job_id == old.job_id
    assert store.claim("w2", 30).job_id == new.job_id
    assert store.claim("w3", 30) is None


def test_only_the_lease_holder_records_a_result(store):
    job = _job()
    store.insert(job)
    store.claim("w1", 30)
    assert not store.finish(job.job_id, "w2", Outcome(status=COMPLETED, counts={"00": 1}))
    assert store.finish(job.job_id, "w1", Outcome(status=COMPLETED, counts={"00": 1}))
    assert not store.finish(job.job_id, "w1", Outcome(status=COMPLETED, counts={"11": 1}))
    assert store.get(job.job_id).outcome.counts == {"00": 1}


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(store):
    job = _job()
    store.insert(job)
    store.claim("dead", 0.05)
    time.sleep(0.1)
    assert store.claim("alive", 30).job_id == job.job_id
    assert store.renew(job.job_id, "dead", 30) is None
    assert not store.finish(job.job_id, "dead", Outcome(status=COMPLETED))
    assert store.finish(job.job_id, "alive", Outcome(status=COMPLETED))


def test_a_job_whose_schedulers_keep_dying_fails_instead_of_looping(store):
    job = _job()
    store.insert(job)
    for attempt in range(MAX_CLAIMS):
        assert store.claim(f"w{attempt}", 0.01).job_id == job.job_id
        time.sleep(0.03)
    assert store.claim("last", 30) is None
    found = store.get(job.job_id)
    assert found.status == "failed" and "abandoned" in found.outcome.error_message


def test_concurrent_workers_never_claim_the_same_job(db_url):
    stores = [JobStore(Database(db_url)) for _ in range(4)]
    jobs = [_job() for _ in range(40)]
    for job in jobs:
        stores[0].insert(job)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        while (job := stores[index].claim(f"w{index}", 30)) is not None:
            with lock:
                claimed.append(job.job_id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert sorted(claimed) == sorted(j.job_id for j in jobs)


def test_cancel_stops_a_queued_job_and_leaves_a_finished_one_unchanged(store):
    queued, done = _job(), _job()
    store.insert(queued)
    store.insert(done)
    job, cancelled = store.cancel(queued.job_id)
    assert cancelled and job.status == "cancelled"
    store.claim("w", 30)  # takes `done`, the only queued job left
    store.finish(done.job_id, "w", Outcome(status=COMPLETED, counts={"00": 3}))
    job, cancelled = store.cancel(done.job_id)
    assert not cancelled and job.status == COMPLETED and job.outcome.counts == {"00": 3}
    with pytest.raises(errors.JobNotFound):
        store.cancel("net_job_missing")


def test_fifty_concurrent_reservations_never_overspend_the_quota(db_url):
    stores = [JobStore(Database(db_url)) for _ in range(5)]
    accepted = 0
    lock = threading.Lock()

    def reserve(i: int) -> None:
        nonlocal accepted
        try:
            stores[i % 5].insert(_job(owner="key_q"), charge=Charge("2026-11-24", 100, 0.0, 1000, None))
        except errors.QuotaExceeded:
            return
        with lock:
            accepted += 1

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(reserve, range(50)))
    assert accepted == 10
    used = stores[0].db.query("SELECT shots FROM usage WHERE owner = 'key_q'")[0]["shots"]
    assert used == 1000
    assert stores[0].db.query("SELECT COUNT(*) AS n FROM jobs WHERE owner = 'key_q'")[0]["n"] == 10


def test_twenty_concurrent_retries_of_one_request_make_one_job_and_one_charge(db_url):
    stores = [JobStore(Database(db_url)) for _ in range(5)]
    charge = Charge("2026-11-24", 10, 0.5, 25, None)  # room for two 10-shot jobs

    def retry(i: int) -> tuple[str, bool]:
        job, created = stores[i % 5].insert(_job(owner="key_r"), request_id="req-retried", charge=charge)
        return job.job_id, created

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(retry, range(20)))
    assert len({job_id for job_id, _ in results}) == 1 and sum(created for _, created in results) == 1
    used = stores[0].db.query("SELECT shots, cost FROM usage WHERE owner = 'key_r'")[0]
    assert (used["shots"], used["cost"]) == (10, 0.5)
    # The next genuine request still fits; the one after it does not, and is not stored.
    assert stores[0].insert(_job(owner="key_r"), request_id="req-next", charge=charge)[1]
    with pytest.raises(errors.QuotaExceeded):
        stores[0].insert(_job(owner="key_r"), request_id="req-third", charge=charge)
    assert stores[0].db.query("SELECT COUNT(*) AS n FROM jobs WHERE owner = 'key_r'")[0]["n"] == 2


def test_concurrent_retries_under_a_quota_that_fits_one_job_all_get_that_job(db_url):
    """A retry that waits on the first one's reservation must find its job, not a spent quota."""
    stores = [JobStore(Database(db_url)) for _ in range(5)]
    charge = Charge("2026-11-24", 10, 0.5, 10, None)  # room for exactly this one job

    def retry(i: int) -> str:
        return stores[i % 5].insert(_job(owner="key_t"), request_id="req-tight", charge=charge)[0].job_id

    with ThreadPoolExecutor(10) as pool:
        job_ids = list(pool.map(retry, range(20)))  # a QuotaExceeded in any retry fails the test here
    assert len(set(job_ids)) == 1
    assert stores[0].db.query("SELECT shots FROM usage WHERE owner = 'key_t'")[0]["shots"] == 10


def test_round_robin_turns_are_shared_between_replicas(db_url):
    a, b = JobStore(Database(db_url)), JobStore(Database(db_url))
    turns = [a.next_turn("x,y"), b.next_turn("x,y"), a.next_turn("x,y"), b.next_turn("x,y")]
    assert turns == [0, 1, 2, 3]


def test_every_transition_is_an_event_in_order(store):
    job = _job()
    store.insert(job)
    store.claim("w", 30)
    store.finish(job.job_id, "w", Outcome(status=COMPLETED, backend="b", counts={"11": 5}))
    events = [e for e in store.events.since(0) if e.job_id == job.job_id]
    assert [e.status for e in events] == ["queued", "running", "completed"]
    assert events[-1].counts == {"11": 5} and events[-1].backend == "b"
    assert events[0].event_id < events[1].event_id < events[2].event_id


def test_an_after_commit_callback_runs_once_after_the_commit_and_never_after_a_rollback(db):
    calls: list[str] = []

    def seen() -> None:
        calls.append("committed")

    with db.transaction() as tx:
        tx.after_commit(seen)
        tx.after_commit(seen)
        assert calls == []  # not before the commit
    assert calls == ["committed"]
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.after_commit(seen)
        raise RuntimeError("rolled back")
    assert calls == ["committed"]


def test_a_handed_job_is_two_transactions_of_three_statements_each(store, monkeypatch):
    """A job submitted while a worker waits is inserted already claimed, and its outcome recorded by the update
    that checks the lease: on PostgreSQL each statement is a round trip, and a job's statements were eight."""
    from qnet_common.db import Tx

    sent: list[str] = []
    execute = Tx.execute
    monkeypatch.setattr(Tx, "execute",
                        lambda tx, sql, params=(): sent.append(sql.split()[0]) or execute(tx, sql, params))
    job = _job()
    stored, created = store.insert(job, claim_for=("w", 30))
    inserted = list(sent)
    store.finish(job.job_id, "w", Outcome(status=COMPLETED, backend="b", counts={"00": 1}))
    finished = sent[len(inserted):]
    assert created and store.get(job.job_id).status == COMPLETED
    event = "WITH" if store.db.dialect == "postgresql" else "INSERT"  # the ordering lock comes first there
    assert inserted == ["INSERT", event, event]
    assert finished == ["UPDATE", "DELETE", event]
    events = [(e.job_id, e.status) for e in store.events.since(0)]
    assert events == [(job.job_id, "queued"), (job.job_id, "running"), (job.job_id, COMPLETED)]
