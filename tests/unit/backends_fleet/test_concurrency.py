"""How many tasks a device runs at once: one on every hardware emulation (a QPU runs one circuit at a time), and
one on the ideal simulator too (Aer runs one job at a time per process)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from services.backends.adapters.registry import DEVICE_IDS, build_devices
from services.backends.domain.fleet import Fleet
from services.backends.domain.qasm import parse

#: 18 qubits, enough gates that a run lasts long enough to be seen running.
WIDE = ('OPENQASM 2.0; include "qelib1.inc"; qreg q[18]; creg c[18]; '
        + " ".join(f"h q[{i}]; cx q[{i}],q[{(i + 1) % 18}];" for i in range(18)) * 6 + " measure q -> c;")


def test_every_device_runs_one_task_at_a_time():
    devices = build_devices(list(DEVICE_IDS))
    assert {d: devices[d].spec.concurrent_tasks for d in devices} == {d: 1 for d in devices}


def test_the_local_simulator_runs_one_task_and_queues_the_others():
    """It ran two at once, but Aer (0.18) holds Python's lock while it simulates and runs one job at a time per
    process: the second waited inside Aer while its queue reported it running."""
    devices = build_devices(["local_simulator"])
    pool = ThreadPoolExecutor(2)
    fleet = Fleet(devices, pool, {})
    circuit = parse(WIDE)

    async def scenario():
        tasks = [fleet.submit("local_simulator", circuit, 2000, f"t{i}", None) for i in range(3)]
        running, queued = set(), set()
        while not all(t.done for t in tasks):
            snapshot = fleet.queues["local_simulator"].snapshot()
            running.add(snapshot.running)
            queued.add(snapshot.queue_depth)
            await asyncio.sleep(0.005)
        await asyncio.gather(*(t.work for t in tasks))
        return running, queued, [fleet.task_status(t) for t in tasks]

    try:
        running, queued, statuses = asyncio.run(scenario())
    finally:
        pool.shutdown(wait=True)
    assert max(running) == 1 and 2 in queued
    assert statuses == ["completed"] * 3
