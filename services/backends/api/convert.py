"""Device model <-> backends protos."""

from __future__ import annotations

import statistics

from google.protobuf.timestamp_pb2 import Timestamp
from qnet.backends.v1 import backends_pb2 as pb

from services.backends.domain.device import Calibration, DeviceSpec
from services.backends.domain.queue import QueueSnapshot

TWO_QUBIT_GATES = {"cx", "cz", "ecr", "ms", "xx", "zz", "iswap", "cphase", "xy", "rzz"}


def timestamp(moment) -> Timestamp:  # a datetime
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def summary(calibration: Calibration) -> pb.CalibrationSummary:
    qubits = calibration.qubits
    one_q = [g.error for g in calibration.gates if len(g.qubits) <= 1 and g.gate.lower() not in TWO_QUBIT_GATES]
    two_q = [g.error for g in calibration.gates if len(g.qubits) == 2 or g.gate.lower() in TWO_QUBIT_GATES]
    return pb.CalibrationSummary(
        median_t1_us=statistics.median(q.t1_us for q in qubits) if qubits else 0.0,
        median_t2_us=statistics.median(q.t2_us for q in qubits) if qubits else 0.0,
        mean_readout_error=statistics.fmean(q.readout_error for q in qubits) if qubits else 0.0,
        mean_single_qubit_error=statistics.fmean(one_q) if one_q else 0.0,
        mean_two_qubit_error=statistics.fmean(two_q) if two_q else 0.0,
        taken_at=timestamp(calibration.taken_at),
    )


def backend(spec: DeviceSpec, status: str, queue: QueueSnapshot, *, with_coupling: bool) -> pb.Backend:
    message = pb.Backend()
    message.CopyFrom(_fixed(spec, with_coupling))
    message.status = status
    message.queue_depth = queue.queue_depth
    message.running = queue.running
    message.estimated_wait_s = queue.estimated_wait_s
    message.avg_execution_time_s = queue.avg_execution_time_s
    return message


#: The part of each device's message that only its spec decides (a calibration summary walks every gate): built
#: once per spec object, which is kept alive with it so that its id is never reused while cached.
_FIXED: dict[tuple[int, bool], tuple[DeviceSpec, pb.Backend]] = {}
_FIXED_MAX = 256


def _fixed(spec: DeviceSpec, with_coupling: bool) -> pb.Backend:
    found = _FIXED.get((id(spec), with_coupling))
    if found is not None and found[0] is spec:
        return found[1]
    message = pb.Backend(
        id=spec.id,
        name=spec.name,
        provider=spec.provider,
        technology=spec.technology,
        num_qubits=spec.num_qubits,
        native_gates=list(spec.native_gates),
        max_shots=spec.max_shots,
        simulator=spec.simulator,
        noisy=spec.noisy,
        connectivity=spec.connectivity,
        supports_classical_control=spec.supports_classical_control,
        price=pb.Price(
            per_task=spec.price.per_task,
            per_shot=spec.price.per_shot,
            per_second=spec.price.per_second,
            currency=spec.price.currency,
            source=spec.price.source,
        ),
        calibration=summary(spec.calibration),
        description=spec.description,
    )
    if with_coupling and spec.coupling_map:
        message.coupling_map.extend(pb.CouplingEdge(control=a, target=b) for a, b in spec.coupling_map)
    if len(_FIXED) >= _FIXED_MAX:
        _FIXED.clear()
    _FIXED[(id(spec), with_coupling)] = (spec, message)
    return message


def calibration(spec: DeviceSpec) -> pb.Calibration:
    cal = spec.calibration
    return pb.Calibration(
        backend_id=spec.id,
        taken_at=timestamp(cal.taken_at),
        source=cal.source,
        qubits=[
            pb.QubitCalibration(
                qubit=q.qubit,
                t1_us=q.t1_us,
                t2_us=q.t2_us,
                readout_error=q.readout_error,
                prob_meas1_prep0=q.readout_error if q.prob_meas1_prep0 is None else q.prob_meas1_prep0,
                prob_meas0_prep1=q.readout_error if q.prob_meas0_prep1 is None else q.prob_meas0_prep1,
            )
            for q in cal.qubits
        ],
        gates=[
            pb.GateCalibration(gate=g.gate, qubits=list(g.qubits), error=g.error, duration_ns=g.duration_ns)
            for g in cal.gates
        ],
        summary=summary(cal),
    )


def queue_status(device_id: str, queue: QueueSnapshot) -> pb.QueueStatus:
    return pb.QueueStatus(
        backend_id=device_id,
        queue_depth=queue.queue_depth,
        running=queue.running,
        concurrency=queue.concurrency,
        max_queue_depth=queue.max_queue_depth,
        avg_execution_time_s=queue.avg_execution_time_s,
        estimated_wait_s=queue.estimated_wait_s,
        completed_tasks=queue.completed_tasks,
        tasks=[
            pb.QueuedTask(task_id=t.task_id, status=t.status, shots=t.shots, age_s=t.age_s) for t in queue.tasks
        ],
    )
