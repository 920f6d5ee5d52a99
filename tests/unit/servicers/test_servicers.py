"""Servicers called directly (no sockets): proto in, domain call, proto out."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from qnet.aggregator.v1 import aggregation_service_pb2 as ag
from qnet.backends.v1 import backend_service_pb2 as bs
from qnet.backends.v1 import device_service_pb2 as ds

from qnet_common import errors
from qnet_common.db import Database
from qnet_common.events import Event, EventHub, EventLog
from services.aggregator.api.servicers import AggregationServicer
from services.backends.adapters.registry import build_devices
from services.backends.api.servicers import BackendServicer, DeviceServicer
from services.backends.domain.fleet import Fleet

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


@pytest.fixture(scope="module")
def devices():
    return build_devices(["ionq_simulator", "rigetti_aspen"])


@pytest.fixture
def fleet(devices):
    pool, checks = ThreadPoolExecutor(2), ThreadPoolExecutor(2)
    yield Fleet(devices, pool, {"rigetti_aspen": "maintenance"}, reader=checks), pool
    pool.shutdown(wait=False)
    checks.shutdown(wait=False)


async def test_assessing_a_submission_never_waits_behind_device_runs(fleet):
    servicer = DeviceServicer(fleet[0])
    busy = threading.Event()
    for _ in range(2):  # every device thread is taken by a long run
        fleet[1].submit(busy.wait, 30)
    try:
        assessed = await asyncio.wait_for(
            servicer.AssessCircuit(ds.AssessCircuitRequest(qasm=BELL, shots=10), None), timeout=10)
    finally:
        busy.set()
    assert {a.device_id: a.runnable for a in assessed.assessments}["ionq_simulator"]


async def test_backend_servicer_maps_the_device_and_its_live_queue(fleet):
    servicer = BackendServicer(fleet[0])
    listed = await servicer.ListBackends(bs.ListBackendsRequest(), None)
    assert [b.id for b in listed.data] == ["ionq_simulator", "rigetti_aspen"]
    assert not listed.data[1].coupling_map  # only GET /backends/{id} carries the coupling map
    aspen = (await servicer.GetBackend(bs.GetBackendRequest(id="rigetti_aspen"), None)).data
    assert aspen.status == "maintenance" and aspen.num_qubits == 80 and len(aspen.coupling_map) > 80
    assert aspen.price.per_shot == 0.00035 and aspen.connectivity == "octagonal"
    with pytest.raises(errors.BackendNotFound):
        await servicer.GetCalibration(bs.GetCalibrationRequest(id="nope"), None)


async def test_device_servicer_runs_assesses_and_refuses_devices_not_online(fleet):
    servicer = DeviceServicer(fleet[0])
    submitted = await servicer.SubmitTask(ds.SubmitTaskRequest(device_id="ionq_simulator", qasm=BELL, shots=100,
                                                               task_id="t1"), None)
    assert submitted.task_id == "t1" and submitted.status in ("queued", "running")
    run = await servicer.GetTask(ds.GetTaskRequest(task_id="t1", wait_s=30), None)
    assert run.status == "completed" and run.device_id == "ionq_simulator"
    assert sum(run.counts.values()) == 100 and set(run.counts) <= {"00", "11"} and run.two_qubit_gates == 1
    # Submitting the same id again is the same task, not a second run.
    again = await servicer.SubmitTask(ds.SubmitTaskRequest(device_id="ionq_simulator", qasm=BELL, shots=100,
                                                           task_id="t1"), None)
    assert again.status == "completed" and again.counts == run.counts
    with pytest.raises(errors.TaskNotFound):
        await servicer.GetTask(ds.GetTaskRequest(task_id="never-submitted"), None)
    with pytest.raises(errors.BackendUnavailable):
        await servicer.SubmitTask(ds.SubmitTaskRequest(device_id="rigetti_aspen", qasm=BELL, shots=10,
                                                       task_id="t2"), None)
    wide = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[40]; creg c[1]; h q[0]; measure q[0] -> c[0];'
    assessed = await servicer.AssessCircuit(ds.AssessCircuitRequest(qasm=wide, shots=10), None)
    by_id = {a.device_id: a for a in assessed.assessments}
    assert not by_id["ionq_simulator"].runnable and by_id["ionq_simulator"].reason.startswith("CIRCUIT_TOO_LARGE")
    assert by_id["rigetti_aspen"].runnable and by_id["rigetti_aspen"].cost == pytest.approx(0.30 + 10 * 0.00035)
    with pytest.raises(errors.InvalidQasm):
        await servicer.AssessCircuit(ds.AssessCircuitRequest(qasm="OPENQASM 2.0; qreg q[1]; nope q[0];", shots=1),
                                     None)


async def test_aggregation_servicer_round_trips_the_maths():
    servicer = AggregationServicer()
    request = ag.AggregateRequest(results=[
        ag.BackendResult(backend="a", counts={"00": 500, "11": 524}),
        ag.BackendResult(backend="b", counts={"00": 512, "11": 512}, fidelity=0.5),
    ], method="weighted_average", shots=1000)
    data = (await servicer.Aggregate(request, None)).data
    assert sum(data.aggregated_counts.values()) == 1000 and data.shots == 1000
    assert {w.backend: round(w.weight, 3) for w in data.backends} == {"a": 0.667, "b": 0.333}
    with pytest.raises(errors.InvalidAggregationMethod):
        await servicer.Aggregate(ag.AggregateRequest(results=request.results, method="mode"), None)


async def test_the_event_hub_replays_then_follows_without_gaps_or_repeats(sqlite_url):
    log = EventLog(Database(sqlite_url))
    for i in range(3):
        log.append(Event(topic="backend_status", status="online", backend=f"before{i}"))
    hub = EventHub(log)
    await hub.start()
    seen: list[str] = []

    async def watch() -> None:
        async for event in hub.watch(since=1):
            seen.append(event.backend)
            if len(seen) == 3:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    await asyncio.to_thread(log.append, Event(topic="backend_status", status="online", backend="after"))
    await asyncio.wait_for(watcher, 5)
    await hub.stop()
    assert seen == ["before1", "before2", "after"]  # after event 1: the two stored, then the live one, once


async def test_a_leaving_scheduler_ends_its_event_watches_with_a_resumable_unavailable(sqlite_url):
    """A draining scheduler used to keep the bridges' streams open for its whole grace period."""
    log = EventLog(Database(sqlite_url))
    hub = EventHub(log)
    await hub.start()
    log.append(Event(topic="backend_status", status="online", backend="seen"))

    async def watch() -> list[str]:
        return [event.backend async for event in hub.watch(since=0)]

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    hub.end_watches()
    with pytest.raises(errors.Unavailable, match="since_event_id=1"):
        await asyncio.wait_for(watcher, 2)
    await hub.stop()


@contextlib.asynccontextmanager
async def slow_rigetti(devices):
    """A DeviceServicer over a fleet whose rigetti_aspen takes 2-3 s a task."""
    pool, checks = ThreadPoolExecutor(2), ThreadPoolExecutor(2)
    try:
        yield DeviceServicer(Fleet(devices, pool, {}, reader=checks, faults={"rigetti_aspen": "slow"}))
    finally:
        pool.shutdown(wait=False)
        checks.shutdown(wait=False)


async def leave_while_waiting(servicer: DeviceServicer, task_id: str) -> None:
    """Submits a rigetti_aspen task that waits for its end, and goes away 0.2 s in (as a killed caller does)."""
    waiting = asyncio.ensure_future(servicer.SubmitTask(
        ds.SubmitTaskRequest(device_id="rigetti_aspen", qasm=BELL, shots=10, task_id=task_id, wait_s=1.0), None))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_submission_that_waits_comes_back_ended_and_one_withdrawn_is_cancelled(devices):
    """SubmitTask's wait_s: a quick task answers ended in the one call (no GetTask); a caller that goes away while
    its submission waits (it never had the handle) withdraws the task, still queued, instead of leaving it to
    run unseen."""
    async with slow_rigetti(devices) as servicer:
        quick = await servicer.SubmitTask(ds.SubmitTaskRequest(device_id="ionq_simulator", qasm=BELL, shots=100,
                                                               task_id="q1", wait_s=1.0), None)
        assert quick.status == "completed" and sum(quick.counts.values()) == 100
        at_once = await servicer.SubmitTask(ds.SubmitTaskRequest(device_id="rigetti_aspen", qasm=BELL, shots=10,
                                                                 task_id="s1"), None)
        assert at_once.status in ("queued", "running") and not at_once.counts
        await leave_while_waiting(servicer, "s2")  # queued behind s1
        withdrawn = await servicer.GetTask(ds.GetTaskRequest(task_id="s2", wait_s=5), None)
        assert withdrawn.status == "failed" and withdrawn.error_code == "CANCELLED", withdrawn
        await servicer.CancelTask(ds.CancelTaskRequest(task_id="s1"), None)


async def test_a_task_already_running_when_its_caller_goes_away_runs_on_for_the_callers_successor(devices):
    """A scheduler killed while its submission waits had its running task withdrawn, and the replica taking
    over its job ran the circuit a second time; now the task goes on and the successor finds it by its id."""
    async with slow_rigetti(devices) as servicer:
        await leave_while_waiting(servicer, "r1")  # the first task: running at once
        found = await servicer.GetTask(ds.GetTaskRequest(task_id="r1", wait_s=10), None)
        assert found.status == "completed" and sum(found.counts.values()) == 10, found


async def test_a_listing_built_from_the_kept_fixed_part_still_shows_each_devices_live_status(fleet):
    """The fixed part of a device's message is built once; the status and the queue are read on every call."""
    servicer = BackendServicer(fleet[0])
    first = {b.id: b for b in (await servicer.ListBackends(bs.ListBackendsRequest(), None)).data}
    fleet[0].set_status("ionq_simulator", "maintenance")
    again = {b.id: b for b in (await servicer.ListBackends(bs.ListBackendsRequest(), None)).data}
    assert (first["ionq_simulator"].status, again["ionq_simulator"].status) == ("online", "maintenance")
    assert again["rigetti_aspen"] == first["rigetti_aspen"]
    assert again["rigetti_aspen"].calibration.mean_two_qubit_error > 0
    again["rigetti_aspen"].name = "changed by a caller"  # a caller's copy: the kept part is not touched
    listed = (await servicer.ListBackends(bs.ListBackendsRequest(), None)).data
    assert listed[1].name == first["rigetti_aspen"].name
