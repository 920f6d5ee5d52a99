"""IonQ devices on the Amazon Braket SDK: `ionq_simulator` (ideal, braket_sv) and `ionq_aria` (noisy,
braket_dm with IonQ's published Aria figures). Both all-to-all; compiled to GPI/GPI2/MS for the figures.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable

import numpy as np

from services.backends.domain.circuit import Circuit
from services.backends.domain.compile import IONQ_NATIVES, ionq_natives, stats, to_basis
from services.backends.domain.device import (
    Assessment,
    Calibration,
    Device,
    DeviceSpec,
    GateCalibration,
    PriceModel,
    QubitCalibration,
    RunResult,
)
from services.backends.domain.emulation import (
    checked,
    estimated_execution_s,
    sample_counts,
    success_probability,
)

# IonQ Aria: published system figures (ionq.com/quantum-systems/aria and the Amazon Braket device page,
# characterisation of 2024): 1q gate fidelity 99.95 %, 2q (MS) 99.4 %, SPAM 99.61 %, T1 10-100 s, T2 ~1 s,
# 1q gate 135 us, MS 600 us, readout 300 us. Braket price: $0.30 per task + $0.03 per shot.
ARIA_1Q_ERROR = 0.0005
ARIA_2Q_ERROR = 0.006
ARIA_READOUT_ERROR = 0.0039
ARIA_T1_US, ARIA_T2_US = 1.0e7, 1.0e6
ARIA_1Q_NS, ARIA_2Q_NS, ARIA_READOUT_NS = 135_000.0, 600_000.0, 300_000.0

_BRAKET_GATES = {"id": "i", "x": "x", "y": "y", "z": "z", "h": "h", "s": "s", "sdg": "si", "t": "t", "tdg": "ti",
                 "sx": "v", "sxdg": "vi", "rx": "rx", "ry": "ry", "rz": "rz", "p": "phaseshift", "u": "u",
                 "cx": "cnot", "cy": "cy", "cz": "cz", "swap": "swap", "cp": "cphaseshift", "rzz": "zz",
                 "rxx": "xx", "ccx": "ccnot", "cswap": "cswap"}


def _aria_calibration(num_qubits: int) -> Calibration:
    qubits = tuple(QubitCalibration(q, ARIA_T1_US, ARIA_T2_US, ARIA_READOUT_ERROR) for q in range(num_qubits))
    gates = (GateCalibration("gpi", (), ARIA_1Q_ERROR, ARIA_1Q_NS), GateCalibration("gpi2", (), ARIA_1Q_ERROR,
             ARIA_1Q_NS), GateCalibration("ms", (), ARIA_2Q_ERROR, ARIA_2Q_NS))
    return Calibration(datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC), qubits, gates,
                       "IonQ Aria published system characterisation (ionq.com, Amazon Braket device page)")


#: braket_sv keeps 2^n amplitudes and passes over all of them per gate (numpy, one core): bounded so that a
#: run takes seconds.
MAX_ACTIVE_QUBITS = 25
MAX_WORK = 2e9

SIMULATOR_SPEC = DeviceSpec(
    id="ionq_simulator", name="IonQ cloud simulator (ideal)", provider="ionq", technology="simulator",
    num_qubits=29, coupling_map=None, native_gates=("gpi", "gpi2", "ms"), max_shots=100_000, simulator=True,
    noisy=False, supports_classical_control=False,
    calibration=Calibration(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), (), (), "ideal: no noise"),
    price=PriceModel(0.0, 0.0, source="IonQ's cloud simulator is free of charge (ionq.com/pricing)"),
    description="Braket local state-vector simulator (braket_sv): ideal, 29 qubits, all-to-all",
    connectivity="all_to_all", max_active_qubits=MAX_ACTIVE_QUBITS, max_work=MAX_WORK,
    emulation="Braket braket_sv",
)
ARIA_SPEC = DeviceSpec(
    id="ionq_aria", name="IonQ Aria (emulated)", provider="ionq", technology="trapped_ion", num_qubits=25,
    coupling_map=None, native_gates=("gpi", "gpi2", "ms"), max_shots=5_000, simulator=False, noisy=True,
    supports_classical_control=False, calibration=_aria_calibration(25),
    price=PriceModel(0.30, 0.03, source="Amazon Braket pricing for IonQ Aria: $0.30 per task + $0.03 per shot"),
    description="Braket density-matrix simulator (braket_dm) with Aria's published gate, SPAM and T1/T2 figures",
    connectivity="all_to_all", max_active_qubits=MAX_ACTIVE_QUBITS, max_work=MAX_WORK,
    emulation="Braket braket_dm up to 6 qubits, else braket_sv with global depolarizing noise",
)


def _local_simulator(name: str):
    """Braket's LocalSimulator on its simulator `name` (braket_sv, braket_dm), whose capabilities are built once.

    Braket's simulators build their capabilities, a constant, anew on every access, and validate them with
    pydantic: twice per run, about 2 ms of a 6 ms Bell circuit on braket_sv. The simulation is Braket's own."""
    import functools

    from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator
    from braket.devices import LocalSimulator

    simulator = {"braket_sv": StateVectorSimulator, "braket_dm": DensityMatrixSimulator}[name]

    class Simulator(simulator):
        @functools.cached_property
        def properties(self):
            return super().properties

    return LocalSimulator(Simulator())


class IonQDevice(Device):
    """Both IonQ devices: the same Braket circuit, ideal on braket_sv, noisy on braket_dm."""

    #: braket_dm keeps a 4^n density matrix and applies every noise channel: exact noise for small circuits;
    #: larger ones run on braket_sv and get the same gate noise as a global depolarizing mixture.
    MAX_DENSITY_QUBITS = 6
    MAX_DENSITY_OPS = 80

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self._device = _local_simulator("braket_dm" if spec.noisy else "braket_sv")
        self._statevector = _local_simulator("braket_sv")

    def _circuit(self, circuit: Circuit, shots: int) -> Circuit:
        return checked(circuit, shots, self.spec, terminal_only=True)

    def _exact_noise(self, circuit: Circuit) -> bool:
        return (self.spec.noisy and len(circuit.active_qubits) <= self.MAX_DENSITY_QUBITS
                and len(circuit.ops) <= self.MAX_DENSITY_OPS)

    def build(self, circuit: Circuit, *, noise: bool):  # a braket Circuit, qubit -> column map
        from braket.circuits import Circuit as BraketCircuit
        from braket.circuits import Noise

        active = circuit.active_qubits
        index = {q: i for i, q in enumerate(active)}
        program = BraketCircuit()
        for op in to_basis(o for o in circuit.ops if o.name != "measure"):
            gate = getattr(program, _BRAKET_GATES[op.name])
            targets = [index[q] for q in op.qubits]
            gate(*targets, *op.params)
            if noise:
                if len(targets) == 1:
                    program.apply_gate_noise(Noise.Depolarizing(ARIA_1Q_ERROR), target_qubits=targets)
                else:
                    program.apply_gate_noise(Noise.TwoQubitDepolarizing(ARIA_2Q_ERROR), target_qubits=targets)
        for q in active:  # every active qubit appears, so columns line up with `active`
            if not any(q in op.qubits for op in circuit.ops if op.name != "measure"):
                program.i(index[q])
        if noise:
            program.apply_readout_noise(Noise.BitFlip(ARIA_READOUT_ERROR))
        return program, index

    def run(self, circuit: Circuit, shots: int, seed: int | None = None) -> RunResult:
        circuit = self._circuit(circuit, shots)
        natives = ionq_natives(circuit.ops)
        depth, two_q = stats(natives)
        started = time.perf_counter()
        measured = circuit.measured
        if not measured:
            counts = {"0" * circuit.num_clbits: shots}
        elif not self.spec.noisy or self._exact_noise(circuit):
            program, index = self.build(circuit, noise=self.spec.noisy)
            result = self._device.run(program, shots=shots).result()
            columns = {q: result.measured_qubits.index(i) for q, i in index.items()}
            samples = np.asarray(result.measurements, dtype=np.int64)
            counts = _counts(samples, {c: columns[q] for c, q in measured.items()}, circuit.num_clbits)
        else:
            counts = self._approximate(circuit, natives, shots, np.random.default_rng(seed))
        return RunResult(counts, shots, depth, two_q, time.perf_counter() - started)

    def _approximate(self, circuit: Circuit, natives: list, shots: int, rng: np.random.Generator) -> dict[str, int]:
        """braket_sv's exact probabilities, mixed with the uniform distribution by the compiled gates' error
        (global depolarizing), then each measured bit flipped with the readout error."""
        program, index = self.build(circuit, noise=False)
        measured = circuit.measured
        qubits = sorted(set(measured.values()))
        program.probability(target=[index[q] for q in qubits])
        probabilities = np.asarray(self._statevector.run(program, shots=0).result().values[0], dtype=float)
        survival = 1.0
        for op in natives:
            if op.name in IONQ_NATIVES:  # pulses only: measurements carry the readout error below
                survival *= 1.0 - (ARIA_2Q_ERROR if op.name == "ms" else ARIA_1Q_ERROR)
        probabilities = survival * probabilities + (1.0 - survival) / probabilities.size
        k = len(qubits)
        tensor = probabilities.reshape((2,) * k)  # axis j = qubits[j], the first target most significant
        flip = np.array([[1 - ARIA_READOUT_ERROR, ARIA_READOUT_ERROR], [ARIA_READOUT_ERROR, 1 - ARIA_READOUT_ERROR]])
        for axis in range(k):
            tensor = np.moveaxis(np.tensordot(flip, tensor, axes=([1], [axis])), 0, axis)
        position = {q: k - 1 - j for j, q in enumerate(qubits)}  # bit of the state index holding each qubit
        return sample_counts(tensor.reshape(-1), position, measured, circuit.num_clbits, shots, rng)

    def assess(self, circuit: Circuit, shots: int) -> Assessment:
        circuit = self._circuit(circuit, shots)
        natives = ionq_natives(circuit.ops)
        depth, two_q = stats(natives)
        if not self.spec.noisy:
            return Assessment(depth, two_q, estimated_execution_s(shots, 0.0, 0.0, 0.0), 1.0)
        cal = self.spec.calibration
        pulses_ns = sum(ARIA_2Q_NS if op.name == "ms" else ARIA_1Q_NS for op in natives if op.name in IONQ_NATIVES)
        shot_s = (pulses_ns + ARIA_READOUT_NS) * 1e-9
        return Assessment(depth, two_q, estimated_execution_s(shots, shot_s, 0.0, 1.0),
                          success_probability(natives, cal, circuit.measured))


def _counts(samples: np.ndarray, clbit_columns: dict[int, int], num_clbits: int) -> dict[str, int]:
    """Rows of measured qubit values -> counts over classical bits, bit 0 rightmost."""
    values = np.zeros(len(samples), dtype=np.int64)
    for clbit, column in clbit_columns.items():
        values |= samples[:, column] << clbit
    keys, numbers = np.unique(values, return_counts=True)
    return {format(int(k), f"0{num_clbits}b"): int(n) for k, n in zip(keys, numbers, strict=True)}


def devices(ids: Iterable[str]) -> dict[str, Device]:
    return {spec.id: IonQDevice(spec) for spec in (SIMULATOR_SPEC, ARIA_SPEC) if spec.id in ids}


__all__ = ["IonQDevice", "devices"]
