"""The backends' gRPC servicers: public BackendService and internal DeviceService. Thin by design."""

from __future__ import annotations

import asyncio

from qnet.backends.v1 import backend_service_pb2 as bs
from qnet.backends.v1 import backend_service_pb2_grpc as bs_grpc
from qnet.backends.v1 import backends_pb2 as bs_pb2
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common import errors
from services.backends.api import convert
from services.backends.domain.circuit import Circuit
from services.backends.domain.fleet import Fleet, Run, Task

#: The longest GetTask waits for a task to end before answering with it as it stands.
MAX_WAIT_S = 30.0
#: The longest SubmitTask waits for its task to end before answering.
MAX_SUBMIT_WAIT_S = 1.0


def _backend(fleet: Fleet, device_id: str, *, with_coupling: bool):
    device = fleet.device(device_id)
    return convert.backend(
        device.spec, fleet.statuses[device_id], fleet.queues[device_id].snapshot(), with_coupling=with_coupling
    )


class BackendServicer(bs_grpc.BackendServiceServicer):
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    async def ListBackends(self, request, context):
        return bs.ListBackendsResponse(
            success=True, data=[_backend(self._fleet, d, with_coupling=False) for d in self._fleet.devices]
        )

    async def GetBackend(self, request, context):
        return bs.GetBackendResponse(success=True, data=_backend(self._fleet, request.id, with_coupling=True))

    async def GetCalibration(self, request, context):
        return bs.GetCalibrationResponse(
            success=True, data=convert.calibration(self._fleet.device(request.id).spec)
        )

    async def GetQueue(self, request, context):
        self._fleet.device(request.id)
        return bs.GetQueueResponse(
            success=True, data=convert.queue_status(request.id, self._fleet.queues[request.id].snapshot())
        )


class DeviceServicer(ds_grpc.DeviceServiceServicer):
    """Internal: only the mesh (service key) may call it, operators SetDeviceStatus (declared in the proto)."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    async def ListDevices(self, request, context):
        # Statuses as stored now: a change just made through another replica is already in the answer.
        await asyncio.to_thread(self._fleet.refresh_statuses)
        return ds.ListDevicesResponse(
            devices=[_backend(self._fleet, d, with_coupling=True) for d in self._fleet.devices]
        )

    async def SubmitTask(self, request, context):
        if not request.task_id:
            raise errors.InvalidArgument("task_id is required: it is the handle for GetTask and CancelTask")
        self._fleet.device(request.device_id)
        circuit = await self._fleet.read(request.qasm)
        task = self._fleet.submit(request.device_id, circuit, request.shots, request.task_id, request.seed or None)
        wait_s = _bounded(request.wait_s, MAX_SUBMIT_WAIT_S)
        if wait_s:
            try:
                task = await self._fleet.wait(task.task_id, wait_s)
            except asyncio.CancelledError:
                # The caller went away before it had the handle: a task still queued is withdrawn; one already
                # running goes on, for the caller's successor to find by its id rather than run again.
                if self._fleet.task_status(task) == "queued":
                    self._fleet.cancel(task.task_id)
                raise
        return self._task(task)

    async def GetTask(self, request, context):
        return self._task(await self._fleet.wait(request.task_id, _bounded(request.wait_s, MAX_WAIT_S)))

    def _task(self, task: Task) -> ds.Task:
        reply = ds.Task(task_id=task.task_id, device_id=task.device_id, status=self._fleet.task_status(task))
        if task.done:
            outcome = task.outcome()
            if isinstance(outcome, Run):
                reply.counts.update(outcome.result.counts)
                reply.queue_time_s = outcome.queue_time_s
                reply.execution_time_s = outcome.execution_time_s
                reply.compiled_depth = outcome.result.compiled_depth
                reply.two_qubit_gates = outcome.result.two_qubit_gates
            else:
                reply.error_code, reply.error_message = outcome.code, outcome.message
        return reply

    async def CancelTask(self, request, context):
        return ds.CancelTaskResponse(cancelled=self._fleet.cancel(request.task_id))

    async def AssessCircuit(self, request, context):
        ids = list(request.device_ids) or list(self._fleet.devices)
        for device_id in ids:
            self._fleet.device(device_id)
        circuit = await self._fleet.read(request.qasm)
        results = await asyncio.gather(*(self._assess(d, circuit, request.shots) for d in ids))
        return ds.AssessCircuitResponse(assessments=results)

    async def _assess(self, device_id: str, circuit: Circuit, shots: int) -> ds.CircuitAssessment:
        quote = await self._fleet.quote(device_id, circuit, shots)
        reply = ds.CircuitAssessment(device_id=device_id, runnable=quote.runnable, reason=quote.reason,
                                     cost=quote.cost, currency=quote.currency, refusal_code=quote.refusal_code)
        if quote.assessment is not None:
            found = quote.assessment
            reply.estimated_execution_s = found.estimated_execution_s
            reply.estimated_success_probability = found.estimated_success_probability
            reply.compiled_depth = found.compiled_depth
            reply.two_qubit_gates = found.two_qubit_gates
        return reply

    async def SetDeviceStatus(self, request, context):
        await asyncio.to_thread(self._fleet.set_status, request.device_id, request.status)
        if request.device_id not in self._fleet.devices:  # served by another replica
            return ds.SetDeviceStatusResponse(device=bs_pb2.Backend(id=request.device_id, status=request.status))
        return ds.SetDeviceStatusResponse(device=_backend(self._fleet, request.device_id, with_coupling=False))


def _bounded(wait_s: float, longest: float) -> float:
    """A requested wait within [0, longest]; NaN is no wait."""
    return min(max(wait_s, 0.0), longest) if wait_s == wait_s else 0.0
