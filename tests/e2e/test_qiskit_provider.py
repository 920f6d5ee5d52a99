"""The Qiskit provider against the running mesh: a Target from the API, transpiling for ibm_brisbane's real
topology, jobs with status, cancel and results, memory refused, and BackendSamplerV2 with parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.primitives import BackendSamplerV2
from qiskit.providers import BackendV2, JobError, JobStatus, JobV1

from qnet_client import Client, errors
from qnet_client.qiskit_provider import QnetProvider
from tests.e2e.conftest import DEV_KEY, MAINTENANCE_DEVICE, SLOW_DEVICE


@pytest.fixture(scope="module")
def provider(single_mesh) -> QnetProvider:
    return QnetProvider(single_mesh.url, DEV_KEY)


def ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    qc.measure_all()
    return qc


def test_backends_are_backend_v2_with_targets_from_the_api(provider):
    backends = {b.name: b for b in provider.backends()}
    assert {"ionq_simulator", "ibm_brisbane", MAINTENANCE_DEVICE} <= set(backends)
    assert all(isinstance(b, BackendV2) for b in backends.values())
    assert [b.name for b in provider.backends(online=True)].count(MAINTENANCE_DEVICE) == 0
    with pytest.raises(errors.CLASSES["BACKEND_NOT_FOUND"]):
        provider.get_backend("no_such_backend")


def test_ibm_brisbane_target_is_its_qubits_natives_coupling_map_and_calibration(provider, single_mesh):
    backend = provider.get_backend("ibm_brisbane")
    api = Client(single_mesh.url, DEV_KEY)
    info, calibration = api.backend("ibm_brisbane"), api.calibration("ibm_brisbane")
    target = backend.target
    assert target.num_qubits == 127
    assert {"ecr", "rz", "sx", "x", "measure"} <= set(target.operation_names)
    assert set(target["ecr"]) == {(e.control, e.target) for e in info.coupling_map}
    ecr = next(g for g in calibration.gates if g.gate == "ecr")
    props = target["ecr"][tuple(ecr.qubits)]
    assert props.error == pytest.approx(ecr.error) and props.duration == pytest.approx(ecr.duration_ns * 1e-9)
    assert target["measure"][(5,)].error == pytest.approx(calibration.qubits[5].readout_error)


def test_a_transpiled_circuit_on_ibm_brisbane_uses_only_target_ops_on_coupled_qubits(provider):
    backend = provider.get_backend("ibm_brisbane")
    qc = QuantumCircuit(5)  # a star: qubit 0 meets four others, and heavy-hex has no qubit with four neighbours
    qc.h(0)
    for q in range(1, 5):
        qc.cx(0, q)
    qc.measure_all()
    compiled = transpile(qc, backend, seed_transpiler=11, optimization_level=1)
    edges = set(backend.coupling_map.get_edges())
    two_qubit = 0
    for inst in compiled.data:
        if inst.operation.name == "barrier":
            continue
        qargs = tuple(compiled.find_bit(q).index for q in inst.qubits)
        assert backend.target.instruction_supported(inst.operation.name, qargs), (inst.operation.name, qargs)
        if len(qargs) == 2:
            assert qargs in edges
            two_qubit += 1
    assert two_qubit > 4  # routing added swaps
    assert set(compiled.count_ops()) <= {"ecr", "rz", "sx", "x", "measure", "barrier"}
    job = backend.run(compiled, shots=2000)
    assert isinstance(job, JobV1)
    counts = job.result().get_counts()
    assert sum(counts.values()) == 2000
    assert (counts.get("00000", 0) + counts.get("11111", 0)) / 2000 > 0.7  # GHZ through the device's noise
    assert job.status() == JobStatus.DONE


def test_memory_is_refused_rather_than_made_up(provider):
    backend = provider.get_backend("ibm_brisbane")
    with pytest.raises(ValueError, match="per-shot memory is not available"):
        backend.run(transpile(ghz(2), backend), shots=10, memory=True)


def test_several_circuits_run_as_one_batch_with_counts_per_circuit(provider):
    backend = provider.get_backend("ionq_simulator")
    ones = QuantumCircuit(2, 2, name="ones")
    ones.x([0, 1])
    ones.measure([0, 1], [0, 1])
    circuits = transpile([ghz(3), ones], backend)
    result = backend.run(circuits, shots=100).result()
    assert set(result.get_counts(0)) == {"000", "111"} and result.get_counts(1) == {"11": 100}


def test_a_job_can_be_cancelled_and_then_has_no_result(provider):
    backend = provider.get_backend(SLOW_DEVICE)
    job = backend.run(transpile(ghz(2), backend), shots=10)
    assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert job.cancel() is True
    assert job.status() == JobStatus.CANCELLED
    with pytest.raises(JobError, match="cancelled"):
        job.result(timeout=30)


def test_backend_sampler_v2_with_parameters_gives_the_expected_distribution(provider):
    backend = provider.get_backend("ionq_simulator")
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    angles = [0.0, math.pi / 3, math.pi / 2, math.pi]
    shots = 2000
    with pytest.raises(ValueError, match="memory_from_counts"):  # the Sampler asks for memory: refused, not zeros
        BackendSamplerV2(backend=backend).run([(transpile(qc, backend), [[0.0]])], shots=10).result()
    backend.set_options(memory_from_counts=True)  # samples in random order, which is all a Sampler reads
    sampler = BackendSamplerV2(backend=backend, options={"seed_simulator": 7})
    result = sampler.run([(transpile(qc, backend), np.array(angles).reshape(-1, 1))], shots=shots).result()
    data = result[0].data.meas
    assert data.shape == (4,) and data.num_shots == shots
    for index, angle in enumerate(angles):
        counts = data[index].get_counts()
        assert set(counts) <= {"00", "11"}  # entangled: never one without the other
        p = math.sin(angle / 2) ** 2
        sigma = math.sqrt(max(p * (1 - p), 1e-9) / shots)
        assert abs(counts.get("11", 0) / shots - p) <= 4 * sigma + 1e-9, (angle, counts)
