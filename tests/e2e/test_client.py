"""The Python client against the running mesh through real Envoy: every route typed, the documented errors as
exceptions, retries that make one job, wait(), and watch() resuming after a forced reconnect."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from qnet_client import AsyncClient, Client, RetryPolicy, errors, models
from qnet_client.grpc_client import GrpcClient
from tests.e2e.conftest import DEV_KEY, FAULTY_DEVICE, MAINTENANCE_DEVICE, SLOW_DEVICE
from tests.e2e.test_slice import BELL
from tests.faultproxy import FaultProxy


def envoy_address(mesh) -> str:
    return mesh.url.split("://", 1)[1].split("/", 1)[0]


def via(proxy: FaultProxy, mesh) -> str:
    return mesh.url.replace(envoy_address(mesh), proxy.address)


def total_jobs(client: Client) -> int:
    return sum(client.metrics().jobs_by_status.values())


class Retries(list):
    def __call__(self, attempt: int, error: errors.QnetError, delay: float) -> None:
        self.append(error.code)


def test_every_route_answers_a_typed_result(single_mesh):
    client = Client(single_mesh.url, DEV_KEY)
    assert isinstance(client.status(), models.NetworkStatus) and client.status().backends
    ids = {b.id for b in client.backends()}
    assert {"ionq_simulator", "ibm_brisbane", MAINTENANCE_DEVICE} <= ids
    brisbane = client.backend("ibm_brisbane")
    assert brisbane.num_qubits == 127 and len(brisbane.coupling_map) > 100
    assert isinstance(brisbane.coupling_map[0], models.CouplingEdge) and brisbane.price.currency == "USD"
    calibration = client.calibration("ibm_brisbane")
    assert len(calibration.qubits) == 127 and any(g.gate == "ecr" for g in calibration.gates)
    assert client.queue("ibm_brisbane").backend_id == "ibm_brisbane"
    assert isinstance(client.metrics(), models.NetworkMetrics)
    assert any(n.id == "ibm_brisbane" for n in client.topology().nodes)
    assert {m.name for m in client.aggregation_methods()} == {"weighted_average", "majority_vote",
                                                               "confidence_weighted", "median"}
    merged = client.aggregate([{"backend": "a", "counts": {"00": 50, "11": 50}},
                               {"backend": "b", "counts": {"00": 48, "11": 52}}], "median", 100)
    assert sum(merged.aggregated_counts.values()) == 100
    estimate = client.estimate(BELL, 100, ["ionq_simulator", "ibm_brisbane"], "cost_optimized")
    assert estimate.selected == ["ionq_simulator"] and len(estimate.backends) == 2

    job = client.execute(BELL, ["ionq_simulator", "ibm_brisbane"], "all", 200, aggregation_method="weighted_average")
    assert job.status == "completed" and {r.backend for r in job.results} == {"ionq_simulator", "ibm_brisbane"}
    assert sum(job.aggregated_counts.values()) == 200 and job.aggregation_method == "weighted_average"
    assert client.get_job(job.job_id).best_counts == job.aggregated_counts

    batch = client.execute_batch([BELL, {"qasm": BELL, "shots": 30}], ["ionq_simulator"], shots=20)
    assert len(batch.jobs) == 2
    deadline = time.monotonic() + 60
    while not batch.done and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = client.get_batch(batch.batch_id)
    assert batch.status == "completed" and [sum(j.counts.values()) for j in batch.jobs] == [20, 30]


def test_documented_errors_raise_their_own_class_with_code_status_and_message(single_mesh):
    client = Client(single_mesh.url, DEV_KEY)
    retries = Retries()
    client.on_retry = retries
    with pytest.raises(errors.CLASSES["UNAUTHENTICATED"]) as caught:
        Client(single_mesh.url, "qnet_wrong").status()
    assert caught.value.status == 401 and caught.value.message
    with pytest.raises(errors.CLASSES["BACKEND_NOT_FOUND"]) as caught:
        client.backend("no_such_backend")
    assert caught.value.status == 404 and "no_such_backend" in caught.value.message
    with pytest.raises(errors.CLASSES["JOB_NOT_FOUND"]):
        client.get_job("net_job_000000000000")
    with pytest.raises(errors.CLASSES["INVALID_STRATEGY"]):
        client.execute(BELL, ["ionq_simulator"], "bogus")
    with pytest.raises(errors.CLASSES["INVALID_QASM"]):
        client.execute("OPENQASM 2.0; qreg q[", ["ionq_simulator"])
    with pytest.raises(errors.CLASSES["NO_BACKENDS"]) as caught:
        client.execute(BELL, [MAINTENANCE_DEVICE])
    assert caught.value.status == 503
    with pytest.raises(errors.CLASSES["ALL_BACKENDS_FAILED"]) as caught:
        client.execute(BELL, [FAULTY_DEVICE], shots=10)
    failed = client.get_job(caught.value.job_id)  # the failed job stays readable, named by the exception
    assert failed.status == "failed" and failed.error.code == "ALL_BACKENDS_FAILED"
    assert retries == []  # none of these is retryable


def test_the_same_idempotency_key_twice_gives_the_same_job(single_mesh):
    client = Client(single_mesh.url, DEV_KEY)
    before = total_jobs(client)
    first = client.execute(BELL, ["ionq_simulator"], shots=50, idempotency_key="client-e2e-same-key")
    again = client.execute(BELL, ["ionq_simulator"], shots=50, idempotency_key="client-e2e-same-key")
    assert first.job_id == again.job_id and again.counts == first.counts
    assert total_jobs(client) == before + 1


def test_a_connection_cut_mid_request_is_retried_into_the_same_job(single_mesh):
    direct = Client(single_mesh.url, DEV_KEY)
    before = total_jobs(direct)
    retries = Retries()
    with FaultProxy(envoy_address(single_mesh)) as proxy:
        client = Client(via(proxy, single_mesh), DEV_KEY, on_retry=retries)

        def cut() -> None:  # the job is accepted and running on the slow device when the connection goes
            time.sleep(1.0)
            proxy.set("reset")
            time.sleep(0.3)
            proxy.set("pass")

        threading.Thread(target=cut, daemon=True).start()
        job = client.execute(BELL, [SLOW_DEVICE], shots=64)
    assert "CONNECTION_ERROR" in retries and proxy.connections >= 2
    assert job.status == "completed" and sum(job.counts.values()) == 64
    assert total_jobs(direct) == before + 1  # the retry found the first job


def test_refused_connections_are_retried_with_backoff_until_the_service_answers(single_mesh):
    retries = Retries()
    with FaultProxy(envoy_address(single_mesh)) as proxy:
        proxy.set("refuse")
        threading.Timer(1.0, proxy.set, ("pass",)).start()
        started = time.monotonic()
        status = Client(via(proxy, single_mesh), DEV_KEY, on_retry=retries).status()
    assert status.overall_status in ("operational", "degraded") and len(retries) >= 2
    assert time.monotonic() - started < 10


def test_retries_are_bounded_and_then_raise_the_connection_error():
    client = Client("http://127.0.0.1:9", DEV_KEY, retry=RetryPolicy(attempts=3, base_delay_s=0.05))
    started = time.monotonic()
    with pytest.raises(errors.ConnectionFailed):
        client.status()
    assert time.monotonic() - started < 2


def test_wait_returns_the_finished_job_or_times_out_leaving_it_running(single_mesh):
    client = Client(single_mesh.url, DEV_KEY)
    job = client.execute(BELL, [SLOW_DEVICE], shots=16, return_immediately=True)
    assert job.status == "queued"
    with pytest.raises(errors.WaitTimeout) as caught:
        client.wait(job.job_id, timeout=0.3)
    assert caught.value.job.status in ("queued", "running")
    seen = []
    done = client.wait(job.job_id, timeout=60, on_update=lambda j: seen.append(j.status))
    assert done.status == "completed" and seen[-1] == "completed" and sum(done.counts.values()) == 16
    with pytest.raises(errors.CLASSES["JOB_ALREADY_FINISHED"]) as caught:
        client.cancel_job(job.job_id)
    assert caught.value.status == 409


def test_watch_resumes_after_a_forced_reconnect_and_misses_nothing(single_mesh):
    direct = Client(single_mesh.url, DEV_KEY)
    events: list[models.Event] = []
    subscribed = threading.Event()
    with FaultProxy(envoy_address(single_mesh)) as proxy:
        watcher = Client(via(proxy, single_mesh), DEV_KEY)
        wanted: set[str] = set()
        finished = threading.Event()

        def follow() -> None:
            for event in watcher.watch(topics=["job_updates"], on_subscribed=subscribed.set):
                events.append(event)
                done = {e.job_id for e in events if e.status == "completed"}
                if wanted and wanted <= done:
                    finished.set()
                    return

        threading.Thread(target=follow, daemon=True).start()
        assert subscribed.wait(30)
        first = direct.execute(BELL, ["ionq_simulator"], shots=8).job_id
        deadline = time.monotonic() + 30
        while not any(e.job_id == first and e.status == "completed" for e in events):
            assert time.monotonic() < deadline, "the first job's events never came"
            time.sleep(0.05)
        connections = proxy.connections
        subscribed.clear()
        proxy.set("reset")  # cut the stream; refused while these jobs run, so their events are missed live
        proxy.set("refuse")
        missed = [direct.execute(BELL, ["ionq_simulator"], shots=8).job_id for _ in range(3)]
        wanted.update([first, *missed])
        proxy.set("pass")
        assert finished.wait(60), f"events seen: {[(e.event_id, e.job_id, e.status) for e in events]}"
        assert subscribed.is_set() and proxy.connections > connections  # it reconnected
    ids = [e.event_id for e in events]
    assert ids == sorted(set(ids))  # in order, none twice
    for job_id in missed:
        assert [e.status for e in events if e.job_id == job_id] == ["queued", "running", "completed"]


async def test_the_async_client_executes_waits_and_watches(single_mesh):
    async with AsyncClient(single_mesh.url, DEV_KEY) as client:
        statuses = await asyncio.gather(client.status(), client.backend("ibm_brisbane"))
        assert statuses[1].num_qubits == 127
        job = await client.execute(BELL, ["ionq_simulator"], shots=20, return_immediately=True,
                                   idempotency_key="client-e2e-async")
        again = await client.execute(BELL, ["ionq_simulator"], shots=20, return_immediately=True,
                                     idempotency_key="client-e2e-async")
        assert again.job_id == job.job_id
        seen = []
        async with asyncio.timeout(60):
            async for event in client.watch(job_id=job.job_id, since=1):  # replays this key's log first
                seen.append(event.status)
                if event.status == "completed":
                    break
        assert seen == ["queued", "running", "completed"]
        assert (await client.wait(job.job_id, 10)).status == "completed"
        with pytest.raises(errors.CLASSES["BACKEND_NOT_FOUND"]):
            await client.queue("no_such_backend")


def test_the_grpc_client_reaches_the_services_with_the_same_errors(single_mesh):
    addresses = {name: single_mesh.addresses[name] for name in ("scheduler", "network", "aggregator")}
    with GrpcClient(DEV_KEY, addresses=addresses) as client:
        job = client.execute(qasm=BELL, backends=["ionq_simulator"], shots=12, idempotency_key="client-e2e-grpc")
        assert job.status == "completed" and sum(job.counts.values()) == 12
        assert client.execute(qasm=BELL, backends=["ionq_simulator"], shots=12,
                              idempotency_key="client-e2e-grpc").job_id == job.job_id
        assert Client(single_mesh.url, DEV_KEY).get_job(job.job_id).job_id == job.job_id  # the same job store
        assert client.status().overall_status and len(client.backends()) >= 6
        with pytest.raises(errors.CLASSES["BACKEND_NOT_FOUND"]):
            client.backend("no_such_backend")
    with GrpcClient("qnet_wrong", addresses=addresses) as client, pytest.raises(errors.CLASSES["UNAUTHENTICATED"]):
        client.status()
