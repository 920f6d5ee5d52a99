"""Clients of the devices (routed by the registry) and the aggregator, implementing the scheduler's ports."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

import grpc
from qnet.aggregator.v1 import aggregation_service_pb2 as ag
from qnet.aggregator.v1 import aggregation_service_pb2_grpc as ag_grpc
from qnet.backends.v1 import device_service_pb2 as ds

from qnet_common import errors
from qnet_common.cache import BytesLRU
from qnet_common.device_router import DeviceRouter
from qnet_common.grpcclient import channel, to_qnet_error
from services.scheduler.domain.ports import Aggregated, Assessment, DeviceInfo, DeviceRun, TaskHandle

#: A device's assessment of a circuit (can it run it, at what cost, how well) depends on the text, the shots and
#: the device's calibration: it is kept this long, so that a circuit submitted again is not assessed again.
ASSESSMENT_TTL_S = 30.0
ASSESSMENT_CACHE_BYTES = 8 << 20

#: How long a submission waits for its task to end before it answers with the handle: a quick simulator's
#: task comes back finished (one RPC, no handle to record); a longer one is recorded and polled.
SUBMIT_WAIT_S = 0.1


class DeviceClient:
    """The devices, through the router: each call goes to a live backends replica serving the device."""

    def __init__(self, router: DeviceRouter) -> None:
        self._router = router
        #: (device, digest of the text, shots) -> (when asked, its assessment).
        self._assessed: BytesLRU[tuple[float, Assessment]] = BytesLRU(ASSESSMENT_CACHE_BYTES, lambda _: 400)

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        devices = await self._router.list_devices(fresh=fresh)
        return [DeviceInfo(d.id, d.status, d.num_qubits, d.estimated_wait_s, d.max_shots) for d in devices]

    async def assess(self, backends: Sequence[str], qasm: str, shots: int) -> dict[str, Assessment]:
        """The devices' assessments of the circuit; one asked within ASSESSMENT_TTL_S is not asked again."""
        digest = hashlib.blake2b(qasm.encode(), digest_size=16).digest()
        now = time.monotonic()
        found: dict[str, Assessment] = {}
        for backend in backends:
            kept = self._assessed.get((backend, digest, shots))
            if kept is not None and now - kept[0] < ASSESSMENT_TTL_S:
                found[backend] = kept[1]
        missing = [b for b in backends if b not in found]
        if missing or not backends:
            for a in (await self._router.assess(missing, qasm, shots)).values():
                found[a.device_id] = Assessment(a.device_id, a.runnable, a.reason, a.cost, a.estimated_execution_s,
                                                a.estimated_success_probability, a.refusal_code)
                self._assessed.put((a.device_id, digest, shots), (now, found[a.device_id]))
        return found

    async def submit(self, backend: str, qasm: str, shots: int, task_id: str) -> TaskHandle:
        address, task = await self._router.submit(backend, qasm, shots, task_id, wait_s=SUBMIT_WAIT_S)
        return TaskHandle(backend, task.task_id, address, run=_run_of(task, backend))

    async def find(self, backend: str, task_id: str) -> TaskHandle | None:
        found = await self._router.find_task(backend, task_id)
        if found is None:
            return None
        address, task = found
        return TaskHandle(backend, task_id, address, run=_run_of(task, backend) if task.status == "completed" else None)

    async def wait(self, handle: TaskHandle, timeout: float) -> DeviceRun | None:
        return _run_of(await self._router.get_task(handle.address, handle.task_id, timeout), handle.backend)

    async def cancel(self, handle: TaskHandle) -> None:
        await self._router.cancel(handle.address, handle.task_id)


def _run_of(task: ds.Task, backend: str) -> DeviceRun | None:
    """The run of an ended task, None while it has not ended; raises the error of a failed one."""
    if task.status == "completed":
        return DeviceRun(dict(task.counts), task.queue_time_s, task.execution_time_s, task.compiled_depth,
                         task.two_qubit_gates)
    if task.status == "failed":
        raise errors.from_code(task.error_code, task.error_message, backend=backend)
    return None


#: How long the aggregator's list of methods is trusted before it is asked again (a rolling upgrade may add one).
METHODS_TTL_S = 60.0


class AggregatorClient:
    def __init__(self, address: str, service_key: str) -> None:
        self._channel = channel(address, service_key)
        self._stub = ag_grpc.AggregationServiceStub(self._channel)
        self._methods: tuple[str, ...] = ()
        self._methods_at = -METHODS_TTL_S

    async def methods(self) -> tuple[str, ...]:
        """The aggregator's method names (it owns the list), asked again after METHODS_TTL_S; the last list
        known while it cannot be reached, () when it never could."""
        if time.monotonic() - self._methods_at >= METHODS_TTL_S:
            try:
                reply = await self._stub.ListMethods(ag.ListMethodsRequest(), timeout=5)
            except grpc.aio.AioRpcError:
                return self._methods
            self._methods = tuple(m.name for m in reply.data)
            self._methods_at = time.monotonic()
        return self._methods

    async def aggregate(
        self, results: Sequence[tuple[str, Mapping[str, int], int, float]], method: str, shots: int
    ) -> Aggregated:
        request = ag.AggregateRequest(
            results=[ag.BackendResult(backend=b, counts=dict(c), shots=s, fidelity=f) for b, c, s, f in results],
            method=method,
            shots=shots,
        )
        try:
            response = await self._stub.Aggregate(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            raise to_qnet_error(error) from None
        return Aggregated(dict(response.data.aggregated_counts), response.data.aggregation_confidence)

    async def close(self) -> None:
        await self._channel.close()
