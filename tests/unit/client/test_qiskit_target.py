"""The Qiskit provider's Target and circuit export, built from API-shaped data (no sockets)."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter

from qnet_client import models
from qnet_client.qiskit_provider import QnetBackend, build_target, to_qasm


def heavy_line() -> tuple[models.Backend, models.Calibration]:
    """Four qubits in a line with directional ECR, as IBM's devices are described."""
    info = models.Backend(id="line", num_qubits=4, native_gates=["rz", "sx", "x", "ecr"], max_shots=1000,
                          coupling_map=[models.CouplingEdge(1, 0), models.CouplingEdge(1, 2),
                                        models.CouplingEdge(3, 2)], supports_classical_control=True)
    gates = [models.GateCalibration(g, [q], 1e-4 * (q + 1), 35.0) for g in ("sx", "x") for q in range(4)]
    gates += [models.GateCalibration("rz", [q], 0.0, 0.0) for q in range(4)]
    gates += [models.GateCalibration("ecr", [c, t], 0.01, 600.0) for c, t in ((1, 0), (1, 2), (3, 2))]
    qubits = [models.QubitCalibration(q, 100.0, 80.0, 0.02 + q / 100) for q in range(4)]
    return info, models.Calibration(backend_id="line", qubits=qubits, gates=gates)


def test_the_target_has_the_natives_the_coupling_map_and_the_calibration():
    target = build_target(*heavy_line())
    assert target.num_qubits == 4
    assert set(target.operation_names) == {"rz", "sx", "x", "ecr", "measure", "if_else"}
    assert set(target["ecr"]) == {(1, 0), (1, 2), (3, 2)}  # directional, as calibrated
    assert target["ecr"][(1, 0)].error == 0.01 and target["ecr"][(1, 0)].duration == pytest.approx(600e-9)
    assert target["sx"][(2,)].error == pytest.approx(3e-4) and target["measure"][(3,)].error == pytest.approx(0.05)
    assert target.qubit_properties[0].t1 == pytest.approx(100e-6)


def test_transpiling_for_the_target_uses_only_its_gates_on_its_edges():
    target = build_target(*heavy_line())
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 2)
    qc.cx(2, 1)
    qc.measure_all()
    compiled = transpile(qc, target=target, seed_transpiler=7)
    for inst in compiled.data:
        if inst.operation.name == "barrier":
            continue
        qargs = tuple(compiled.find_bit(q).index for q in inst.qubits)
        assert target.instruction_supported(inst.operation.name, qargs), (inst.operation.name, qargs)


def test_symmetric_two_qubit_natives_allow_both_directions_and_ionq_natives_map_to_r_and_rxx():
    rigetti = models.Backend(id="r", num_qubits=3, native_gates=["rx", "rz", "cz"],
                             coupling_map=[models.CouplingEdge(0, 1), models.CouplingEdge(1, 2)])
    assert set(build_target(rigetti, None)["cz"]) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    ionq = build_target(models.Backend(id="i", num_qubits=5, native_gates=["gpi", "gpi2", "ms"]), None)
    assert set(ionq.operation_names) == {"r", "rxx", "measure"}
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ccx(0, 1, 2)
    assert set(transpile(qc, target=ionq).count_ops()) <= {"r", "rxx"}


def test_export_is_openqasm_and_unbound_parameters_are_refused():
    qc = QuantumCircuit(1, 1)
    qc.ry(Parameter("theta"), 0)
    with pytest.raises(ValueError, match="unbound parameters"):
        to_qasm(qc)
    assert to_qasm(qc.assign_parameters([0.5])).startswith("OPENQASM 2.0;")
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(0)
    assert to_qasm(qc.assign_parameters([0.5])).startswith("OPENQASM 3.0;")


def test_memory_is_refused_instead_of_made_up():
    backend = QnetBackend(None, *heavy_line())
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    with pytest.raises(ValueError, match="per-shot memory is not available"):
        backend.run(qc, memory=True)
    with pytest.raises(ValueError, match="unknown run options"):
        backend.run(qc, shotz=10)
