"""The device registry as real processes: each device call goes to a live backends replica that serves it.

Backends replicas register the devices they serve (QNET_DEVICES) in the shared database; the scheduler and the
network service route by device id. What an operator sees: each replica executes only its own devices (its
`qnet_backend_executions_total`), a new adapter joins without a restart, a device on two replicas shares its
tasks and survives one of them dying, a scheduler taking over a job reattaches to its device task (no second
execution), and the catalogue reports a dead replica's devices as offline.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import grpc
import pytest
from qnet.backends.v1 import backend_service_pb2 as bs
from qnet.backends.v1 import backend_service_pb2_grpc as bs_grpc

from qnet_common import errors
from qnet_common.db import Database
from qnet_common.keys import ApiKeyStore
from qnet_common.registry import LEASE_S
from tests import procs
from tests.integration.test_scheduler_processes import SERVICE_KEY, submit, terminal_events, wait_terminal

EXECUTIONS = re.compile(r'^qnet_backend_executions_total\{backend="([^"]+)"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def mesh_env(tmp_path):
    """The environment of every process of one mesh (as in test_scheduler_processes)."""
    def make(db_url: str, **extra: str) -> dict[str, str]:
        return {"QNET_DATABASE_URL": db_url, "QNET_SERVICE_KEY": SERVICE_KEY, "QNET_DATA_DIR": str(tmp_path),
                "QNET_GRACE_S": "2", **extra}
    return make


def executions(service: procs.Service) -> dict[str, int]:
    """The replica's `qnet_backend_executions_total` by device, as Prometheus would scrape it."""
    with urllib.request.urlopen(f"http://{service.metrics}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {device: int(float(value)) for device, value in EXECUTIONS.findall(text)}


def jobs(db: Database, job_ids: list[str]) -> dict[str, dict]:
    rows = {r["job_id"]: r for r in db.query("SELECT job_id, status, backend, claims, outcome FROM jobs")}
    return {j: rows[j] for j in job_ids}


def wait_for(condition, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} (waited {timeout}s)"
        time.sleep(step)


def stop(*services: procs.Service) -> None:
    for service in services:
        service.terminate()


@pytest.mark.slow
def test_each_device_runs_on_the_replica_that_serves_it_and_a_new_adapter_joins_without_a_restart(
    tmp_path, sqlite_url, mesh_env
):
    key = ApiKeyStore(Database(sqlite_url)).create("registry")[1]
    ionq = procs.start("services.backends.main", "backends-ionq", tmp_path,
                       mesh_env(sqlite_url, QNET_DEVICES="ionq_simulator"))
    local = procs.start("services.backends.main", "backends-local", tmp_path,
                        mesh_env(sqlite_url, QNET_DEVICES="local_simulator"))
    aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, mesh_env(sqlite_url))
    scheduler = procs.start("services.scheduler.main", "scheduler", tmp_path,
                            mesh_env(sqlite_url, QNET_AGGREGATOR_ADDR=aggregator.address))
    started = [ionq, local, aggregator, scheduler]
    db = Database(sqlite_url)
    try:
        # Different counts per device: a task routed to the wrong replica changes both replicas' figures.
        on_ionq = submit(scheduler.address, key, 3, backends=["ionq_simulator"])
        on_local = submit(scheduler.address, key, 2, backends=["local_simulator"])
        wait_terminal(db, on_ionq + on_local, timeout=60)
        rows = jobs(db, on_ionq + on_local)
        assert {j: rows[j]["status"] for j in rows} == {j: "completed" for j in rows}
        assert {rows[j]["backend"] for j in on_ionq} == {"ionq_simulator"}
        assert {rows[j]["backend"] for j in on_local} == {"local_simulator"}
        assert executions(ionq) == {"ionq_simulator": 3}
        assert executions(local) == {"local_simulator": 2}

        # A device no replica has ever served is unknown to the mesh...
        with pytest.raises(grpc.RpcError) as refused:
            submit(scheduler.address, key, 1, backends=["rigetti_aspen"])
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value.details()

        # ... until its adapter joins; nothing else is restarted.
        rigetti = procs.start("services.backends.main", "backends-rigetti", tmp_path,
                              mesh_env(sqlite_url, QNET_DEVICES="rigetti_aspen"))
        started.append(rigetti)
        deadline = time.monotonic() + 10
        while True:
            try:
                on_rigetti = submit(scheduler.address, key, 1, backends=["rigetti_aspen"])
                break
            except grpc.RpcError as error:  # the registry is read again within a second or so
                assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
                assert time.monotonic() < deadline, f"rigetti_aspen still refused 10 s after joining: {error}"
                time.sleep(0.2)
        wait_terminal(db, on_rigetti, timeout=60)
        row = jobs(db, on_rigetti)[on_rigetti[0]]
        assert (row["status"], row["backend"]) == ("completed", "rigetti_aspen"), row["outcome"]
        assert executions(rigetti) == {"rigetti_aspen": 1}
        assert executions(ionq) == {"ionq_simulator": 3}
        assert executions(local) == {"local_simulator": 2}
        assert all(s.process.poll() is None for s in (ionq, local, aggregator, scheduler)), "something restarted"
    finally:
        db.close()
        stop(*started)


@pytest.mark.slow
def test_a_device_on_two_replicas_shares_its_tasks_and_a_killed_replica_s_tasks_run_elsewhere(
    tmp_path, sqlite_url, mesh_env
):
    key = ApiKeyStore(Database(sqlite_url)).create("shared")[1]
    # Slow device runs (2-3 s each) keep tasks in flight long enough to see them spread and to kill under them.
    env = mesh_env(sqlite_url, QNET_DEVICES="local_simulator", QNET_FAULTS="local_simulator=slow")
    survivor = procs.start("services.backends.main", "backends-1", tmp_path, env)
    victim = procs.start("services.backends.main", "backends-2", tmp_path, env)
    aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, mesh_env(sqlite_url))
    scheduler = procs.start("services.scheduler.main", "scheduler", tmp_path, mesh_env(
        sqlite_url, QNET_AGGREGATOR_ADDR=aggregator.address, QNET_WORKERS="8"))
    db = Database(sqlite_url)
    try:
        first = submit(scheduler.address, key, 8, backends=["local_simulator"])

        def both_executing() -> dict | None:
            counts = {s.name: executions(s).get("local_simulator", 0) for s in (survivor, victim)}
            return counts if all(counts.values()) else None

        wait_for(both_executing, 30, "the 8 tasks were not shared: one replica executed none", step=0.1)
        # Tasks still in flight when both replicas had executed some: shared while running, not one after another.
        assert any(r["status"] != "completed" for r in jobs(db, first).values()), "all done before both ran one"

        # A second wave; once every one of its jobs holds a device task (each sleeps 2-3 s before executing),
        # kill one replica under its share of them.
        submitted = time.monotonic()
        second = submit(scheduler.address, key, 8, backends=["local_simulator"])

        def handed_out() -> dict[str, list[str]] | None:
            rows = db.query("SELECT t.job_id, t.address FROM job_tasks t JOIN jobs j ON j.job_id = t.job_id"
                            " WHERE j.status = 'running'")
            by_address: dict[str, list[str]] = {}
            for r in rows:
                if r["job_id"] in second:
                    by_address.setdefault(r["address"], []).append(r["job_id"])
            return by_address if sum(map(len, by_address.values())) == len(second) else None

        shares = wait_for(handed_out, 30, "the second wave did not all start running on the device")
        victim.kill()  # SIGKILL: its queued and sleeping tasks are gone with it
        killed_after = time.monotonic() - submitted
        lost = shares.get(victim.address, [])
        assert lost and shares.get(survivor.address), f"the second wave was not shared: {shares}"
        job_ids = first + second
        wait_terminal(db, job_ids, timeout=90)
        rows = jobs(db, job_ids)
        assert {j: rows[j]["status"] for j in job_ids} == {j: "completed" for j in job_ids}, {
            j: json.loads(rows[j]["outcome"] or "{}").get("error_message") for j in job_ids
            if rows[j]["status"] != "completed"}
        assert terminal_events(db, job_ids) == {j: 1 for j in job_ids}
        # The jobs whose task died with the replica were run again (by the survivor, the one left), on a later
        # attempt; a kill within 2 s of the submissions landed while every lost task was still in its 2-3 s sleep.
        attempts = {j: max(r["attempts"] for r in json.loads(rows[j]["outcome"])["runs"]) for j in lost}
        retried = {j for j, a in attempts.items() if a >= 2}
        assert retried, f"no lost task was retried: {attempts}"
        if killed_after < 2.0:
            assert retried == set(lost), f"lost tasks reported done without running again: {attempts}"
    finally:
        db.close()
        stop(survivor, victim, aggregator, scheduler)


@pytest.mark.slow
def test_a_scheduler_taking_over_a_job_reattaches_to_its_device_task_instead_of_running_it_again(
    tmp_path, sqlite_url, mesh_env
):
    key = ApiKeyStore(Database(sqlite_url)).create("takeover")[1]
    backends = procs.start("services.backends.main", "backends", tmp_path, mesh_env(
        sqlite_url, QNET_DEVICES="local_simulator", QNET_FAULTS="local_simulator=slow"))
    aggregator = procs.start("services.aggregator.main", "aggregator", tmp_path, mesh_env(sqlite_url))
    env = mesh_env(sqlite_url, QNET_AGGREGATOR_ADDR=aggregator.address, QNET_LEASE_S="2")
    first = procs.start("services.scheduler.main", "scheduler-1", tmp_path, env)
    second = None
    db = Database(sqlite_url)
    try:
        job_ids = submit(first.address, key, 6, backends=["local_simulator"])

        def all_handed() -> bool:  # every job running, its device task recorded (the kill loses no handle)
            rows = db.query("SELECT j.status, t.task_id FROM jobs j LEFT JOIN job_tasks t ON t.job_id = j.job_id")
            return len(rows) == 6 and all(r["status"] == "running" and r["task_id"] for r in rows)

        wait_for(all_handed, 30, "the jobs did not all start running with a recorded device task")
        first.kill()  # SIGKILL: leases left behind, the device tasks go on without anyone waiting for them
        assert executions(backends).get("local_simulator", 0) < 6, "the tasks finished before the kill"
        second = procs.start("services.scheduler.main", "scheduler-2", tmp_path, env)
        rows = wait_terminal(db, job_ids, timeout=60)
        assert {j: rows[j]["status"] for j in job_ids} == {j: "completed" for j in job_ids}
        assert terminal_events(db, job_ids) == {j: 1 for j in job_ids}
        assert any(rows[j]["claims"] == 2 for j in job_ids), "no job was taken over after the kill"
        assert executions(backends) == {"local_simulator": 6}, "a device task was executed twice"
    finally:
        db.close()
        stop(*(s for s in (second, first, aggregator, backends) if s is not None))


@pytest.mark.slow
def test_the_catalogue_lists_every_replica_s_devices_and_a_dead_replica_s_devices_as_offline(
    tmp_path, sqlite_url, mesh_env
):
    key = ApiKeyStore(Database(sqlite_url)).create("catalogue")[1]
    ionq = procs.start("services.backends.main", "backends-ionq", tmp_path,
                       mesh_env(sqlite_url, QNET_DEVICES="ionq_simulator"))
    local = procs.start("services.backends.main", "backends-local", tmp_path,
                        mesh_env(sqlite_url, QNET_DEVICES="local_simulator"))
    network = procs.start("services.network.main", "network", tmp_path, mesh_env(sqlite_url))
    auth = (("authorization", f"Bearer {key}"),)
    try:
        with grpc.insecure_channel(network.address) as channel:
            catalogue = bs_grpc.BackendServiceStub(channel)

            def listed() -> dict[str, str]:
                reply = catalogue.ListBackends(bs.ListBackendsRequest(), metadata=auth, timeout=10)
                return {d.id: d.status for d in reply.data}

            assert listed() == {"ionq_simulator": "online", "local_simulator": "online"}
            ionq.kill()
            killed = time.monotonic()
            seen: list[dict[str, str]] = []

            def ionq_offline() -> bool:
                seen.append(listed())
                return seen[-1].get("ionq_simulator") == "offline"

            wait_for(ionq_offline, LEASE_S + 4, f"ionq_simulator not reported offline after its replica died: {seen}",
                     step=0.2)
            # Listed still (a known device, not a vanished one), and stays offline once the lease has lapsed.
            time.sleep(max(0.0, killed + LEASE_S + 0.5 - time.monotonic()))
            seen.append(listed())
            assert seen[-1] == {"ionq_simulator": "offline", "local_simulator": "online"}
            assert all(s.get("local_simulator") == "online" for s in seen), seen

            with pytest.raises(grpc.RpcError) as unknown:
                catalogue.GetBackend(bs.GetBackendRequest(id="no_such"), metadata=auth, timeout=10)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, unknown.value.details()
            # A known device with no live replica is unavailable, not "not found".
            with pytest.raises(grpc.RpcError) as offline:
                catalogue.GetBackend(bs.GetBackendRequest(id="ionq_simulator"), metadata=auth, timeout=10)
            assert offline.value.code() == grpc.StatusCode.UNAVAILABLE, offline.value.details()
            served = catalogue.GetBackend(bs.GetBackendRequest(id="local_simulator"), metadata=auth, timeout=10)
            assert served.data.id == "local_simulator" and served.data.status == "online"
    finally:
        stop(ionq, local, network)


@pytest.mark.slow
async def test_a_replica_whose_registration_lapsed_in_a_database_outage_still_serves_its_devices(
        tmp_path, sqlite_url, mesh_env):
    """After an outage longer than the lease every registration has lapsed until its next renewal; a job
    claimed in that window used to fail NO_BACKENDS although every adapter was up."""
    from qnet_common.device_router import DeviceRouter
    from qnet_common.device_status import StatusStore
    from qnet_common.registry import Registry

    backends = procs.start("services.backends.main", "backends", tmp_path,
                           mesh_env(sqlite_url, QNET_DEVICES="ionq_simulator"))
    try:
        registry = Registry(Database(sqlite_url))
        wait_for(lambda: [i for i in registry.instances() if i.service == "backends"], 10, "no registration")
        backends.process.send_signal(__import__("signal").SIGSTOP)  # no renewals, as while the database was down
        time.sleep(0.5)
        Database(sqlite_url).query("UPDATE registry SET expires_at = ? WHERE service = 'backends'",
                                   (time.time() - 1,))
        backends.process.send_signal(__import__("signal").SIGCONT)  # up again, its next renewal not yet due
        router = DeviceRouter(registry, SERVICE_KEY, StatusStore(Database(sqlite_url)))
        devices = {d.id: d.status for d in await router.list_devices(fresh=True)}
        await router.close()
        assert devices == {"ionq_simulator": "online"}
    finally:
        backends.terminate()


async def test_a_status_page_sees_a_stored_status_at_once_without_asking_the_replicas(tmp_path, sqlite_url, mesh_env):
    """The network's listing for /status and /backends: descriptions and queues shared for LIST_TTL_S, each
    status as stored when the request came. While the store cannot be read, the statuses the replicas last
    listed stand; a device whose every replica is gone stays offline whatever is stored."""
    from qnet_common.device_router import DeviceRouter
    from qnet_common.device_status import StatusStore
    from qnet_common.registry import Registry

    class Unreadable(StatusStore):
        def load(self) -> dict[str, str]:
            raise errors.Unavailable("the database is unreachable")

    backends = procs.start("services.backends.main", "backends", tmp_path,
                           mesh_env(sqlite_url, QNET_DEVICES="ionq_simulator"))
    db = Database(sqlite_url)
    statuses = StatusStore(db)
    router = DeviceRouter(Registry(db), SERVICE_KEY, statuses)
    cut_off = DeviceRouter(Registry(db), SERVICE_KEY, Unreadable(db))

    def listings() -> int:
        return procs.rpcs_handled(backends.metrics, "ListDevices")

    async def replica_read_it() -> bool:  # the replica lists what it last read from the store (STATUS_TTL_S)
        return (await cut_off.list_devices(fresh=True))[0].status == "maintenance"

    async def gone() -> bool:  # a device no live replica serves is listed bare
        return (await router.list_devices(fresh=True))[0].num_qubits == 0

    try:
        wait_for(lambda: [i for i in Registry(db).instances() if i.service == "backends"], 10, "no registration")
        assert {d.id: d.status for d in await router.devices_as_stored()} == {"ionq_simulator": "online"}
        answered = listings()
        statuses.save("ionq_simulator", "maintenance")
        for _ in range(5):
            assert {d.id: d.status for d in await router.devices_as_stored()} == {"ionq_simulator": "maintenance"}
        assert listings() == answered, "a read asked the replica again within LIST_TTL_S"
        await procs.eventually(replica_read_it, "the replica never read the stored status")
        assert {d.id: d.status for d in await cut_off.devices_as_stored()} == {"ionq_simulator": "maintenance"}
        backends.terminate()
        await procs.eventually(gone, "the stopped replica's device is still described")
        statuses.save("ionq_simulator", "online")
        assert {d.id: d.status for d in await router.devices_as_stored()} == {"ionq_simulator": "offline"}
    finally:
        await router.close()
        await cut_off.close()
        backends.terminate()

