"""How many tasks a device runs at once: one on every hardware emulation (a QPU runs one circuit at a time),
several on the ideal simulator that runs on the cluster itself."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from services.backends.adapters.registry import DEVICE_IDS, build_devices
from services.backends.domain.fleet import Fleet
from services.backends.domain.qasm import parse

#: 18 qubits, enough gates that a run lasts long enough to be seen running.
WIDE = ('OPENQASM 2.0; include "qelib1.inc"; qreg q[18]; creg c[18]; '
        + " ".join(f"h q[{i}]; cx q[{i}],q[{(i + 1) % 18}];" for i in range(18)) * 6 + " measure q -> c;")


def test_only_the_ideal_cluster_simulator_runs_several_tasks_at_once():
    devices = build_devices(list(DEVICE_IDS))
    assert {d: devices[d].spec.concurrent_tasks for d in devices} == {
        d: (2 if d == "local_simulator" else 1) for d in devices}


def test_the_local_simulator_runs_two_tasks_at_once_and_queues_the_third():
    devices = build_devices(["local_simulator"])
    pool = ThreadPoolExecutor(2)
    fleet = Fleet(devices, pool, {})
    circuit = parse(WIDE)

    async def scenario():
        tasks = [fleet.submit("local_simulator", circuit, 2000, f"t{i}", None) for i in range(3)]
        seen = 0
        for _ in range(200):  # until the two are running together
            await asyncio.sleep(0.01)
            snapshot = fleet.queues["local_simulator"].snapshot()
            seen = max(seen, snapshot.running)
            if seen == 2:
                break
        queued = snapshot.queue_depth
        await asyncio.gather(*(t.work for t in tasks))
        return seen, queued, [fleet.task_status(t) for t in tasks]

    try:
        seen, queued, statuses = asyncio.run(scenario())
    finally:
        pool.shutdown(wait=True)
    assert seen == 2 and queued >= 1
    assert statuses == ["completed"] * 3
