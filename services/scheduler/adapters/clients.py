"""gRPC clients of the backends' DeviceService and the aggregator, implementing the scheduler's ports."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

import grpc
from qnet.aggregator.v1 import aggregation_service_pb2 as ag
from qnet.aggregator.v1 import aggregation_service_pb2_grpc as ag_grpc
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common import errors
from qnet_common.grpcclient import channel, to_qnet_error
from services.scheduler.domain.ports import Aggregated, Assessment, DeviceInfo, DeviceRun


class DeviceClient:
    """The backends' DeviceService; the device list is cached briefly (queue figures move fast)."""

    LIST_TTL_S = 0.25

    def __init__(self, address: str, service_key: str) -> None:
        self._channel = channel(address, service_key)
        self._stub = ds_grpc.DeviceServiceStub(self._channel)
        self._listed: tuple[float, list[DeviceInfo]] | None = None

    async def list(self, *, fresh: bool = False) -> list[DeviceInfo]:
        now = time.monotonic()
        if not fresh and self._listed and now - self._listed[0] < self.LIST_TTL_S:
            return self._listed[1]
        try:
            response = await self._stub.ListDevices(ds.ListDevicesRequest(), timeout=10)
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from None
        devices = [
            DeviceInfo(d.id, d.status, d.num_qubits, d.estimated_wait_s, d.max_shots) for d in response.devices
        ]
        self._listed = (now, devices)
        return devices

    async def assess(self, backends: Sequence[str], qasm: str, shots: int) -> dict[str, Assessment]:
        try:
            response = await self._stub.AssessCircuit(
                ds.AssessCircuitRequest(device_ids=list(backends), qasm=qasm, shots=shots), timeout=60
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from None
        return {
            a.device_id: Assessment(a.device_id, a.runnable, a.reason, a.cost, a.estimated_execution_s,
                                    a.estimated_success_probability, a.refusal_code)
            for a in response.assessments
        }

    async def run(self, backend: str, qasm: str, shots: int, task_id: str) -> DeviceRun:
        try:
            r = await self._stub.RunCircuit(
                ds.RunCircuitRequest(device_id=backend, qasm=qasm, shots=shots, task_id=task_id), timeout=600
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from None
        return DeviceRun(dict(r.counts), r.queue_time_s, r.execution_time_s, r.compiled_depth, r.two_qubit_gates)

    async def cancel(self, task_id: str) -> None:
        # A backend that cannot be reached has lost its task anyway.
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub.CancelTask(ds.CancelTaskRequest(task_id=task_id), timeout=5)

    async def close(self) -> None:
        await self._channel.close()


class AggregatorClient:
    def __init__(self, address: str, service_key: str) -> None:
        self._channel = channel(address, service_key)
        self._stub = ag_grpc.AggregationServiceStub(self._channel)

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


def _unavailable(error: grpc.aio.AioRpcError) -> errors.QnetError:
    return to_qnet_error(error)
