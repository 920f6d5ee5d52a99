"""A circuit submitted again to the same devices with the same shots is not assessed again for a while: the
scheduler keeps each device's assessment (the backends' answer for that text, device and shot count, which only
a new calibration changes) for ASSESSMENT_TTL_S."""

from __future__ import annotations

import asyncio

from qnet.backends.v1 import device_service_pb2 as ds

from services.scheduler.adapters import clients
from services.scheduler.adapters.clients import DeviceClient

BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'


class Router:
    """The device router's assess, answering as a backends replica would, and counting what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[tuple[str, ...], str, int]] = []

    async def assess(self, device_ids, qasm, shots):
        self.asked.append((tuple(device_ids), qasm, shots))
        return {d: ds.CircuitAssessment(device_id=d, runnable=True, cost=0.01 * shots, estimated_execution_s=0.5,
                                        estimated_success_probability=0.9) for d in device_ids}


def test_a_repeated_circuit_is_assessed_once_per_device_and_shot_count(monkeypatch):
    router = Router()
    devices = DeviceClient(router)

    async def scenario():
        first = await devices.assess(["a", "b"], BELL, 100)
        again = await devices.assess(["a", "b"], BELL, 100)
        await devices.assess(["a", "c"], BELL, 100)  # only c is new
        await devices.assess(["a"], BELL, 200)  # other shots: another cost
        await devices.assess(["a"], BELL + " ", 100)  # another text
        return first, again

    first, again = asyncio.run(scenario())
    assert first == again and first["a"].cost == 1.0
    assert router.asked == [(("a", "b"), BELL, 100), (("c",), BELL, 100), (("a",), BELL, 200),
                            (("a",), BELL + " ", 100)]


def test_an_assessment_is_asked_again_once_it_is_older_than_the_ttl(monkeypatch):
    router = Router()
    devices = DeviceClient(router)
    now = [1000.0]
    monkeypatch.setattr(clients.time, "monotonic", lambda: now[0])

    async def scenario():
        await devices.assess(["a"], BELL, 100)
        now[0] += clients.ASSESSMENT_TTL_S + 1
        await devices.assess(["a"], BELL, 100)

    asyncio.run(scenario())
    assert len(router.asked) == 2
