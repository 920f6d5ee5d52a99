"""IBM devices on Qiskit: `ibm_brisbane` (127-qubit Eagle r3, ECR/RZ/SX/X) and `ibm_torino` (133-qubit Heron
r1, CZ/RZ/SX/X), from the calibration snapshots that qiskit-ibm-runtime ships as FakeBrisbane and FakeTorino.

Circuits are compiled with Qiskit's transpiler for the real coupling map and basis. The noise model is Aer's
own device model of the snapshot (`basic_device_gate_errors`: each gate's error as a depolarizing channel with
thermal relaxation over its duration; per-qubit readout errors), computed once per device and kept, for each
circuit, on its active physical qubits only; Aer drops the idle qubits. That is the model of
`AerSimulator.from_backend`, which builds all 127 qubits' model on every call (see bench/results/devices.md for
the speed ratio).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from qnet_common.cache import BytesLRU
from services.backends.adapters.qiskit_common import counts_of, to_qiskit
from services.backends.domain.circuit import Circuit
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
from services.backends.domain.emulation import checked, estimated_execution_s

#: IBM Quantum pay-as-you-go: $96 per minute of quantum time (ibm.com/quantum/pricing).
IBM_PRICE = PriceModel(0.0, 0.0, per_second=1.60, source="IBM Quantum pay-as-you-go: $96 per minute ($1.60/s)")
#: Per-task overhead and per-shot repetition delay IBM bills as usage (a documented estimate).
TASK_OVERHEAD_S = 2.0
REP_DELAY_S = 250e-6

#: Compiled circuits and per-qubit-set noise models kept per device, bounded in (estimated) bytes.
COMPILE_CACHE_BYTES = 32 << 20
NOISE_CACHE_BYTES = 16 << 20
#: Aer samples noisy circuits shot by shot (trajectories): bounded by active qubits and by
#: operations x 2^qubits x shots.
MAX_ACTIVE_QUBITS = 20
MAX_WORK = 2.5e9

FAKES = {
    "ibm_brisbane": ("FakeBrisbane", "IBM Brisbane (Eagle r3)", "ECR, RZ, SX, X on a heavy-hex lattice"),
    "ibm_torino": ("FakeTorino", "IBM Torino (Heron r1)", "CZ, RZ, SX, X on a heavy-hex lattice"),
}
_VIRTUAL = {"rz", "barrier", "delay", "id", "measure", "reset"}


def _calibration(backend) -> Calibration:
    props = backend.properties()
    qubits = []
    for q in range(backend.num_qubits):
        # The snapshot's raw values are in the unit each names (T1 in us, gate_length in ns); the properties'
        # accessors convert them to SI, which is what the conversions below assume.
        values = {p.name: p.value for p in props.qubits[q]}
        readout = values.get("readout_error", 0.0)
        qubits.append(QubitCalibration(
            q, props.t1(q) * 1e6, props.t2(q) * 1e6, readout,
            values.get("prob_meas1_prep0", readout), values.get("prob_meas0_prep1", readout),
        ))
    gates = []
    for gate in props.gates:
        params = {p.name: p.value for p in gate.parameters}
        gates.append(GateCalibration(gate.gate, tuple(gate.qubits), params.get("gate_error", 0.0),
                                     props.gate_length(gate.gate, list(gate.qubits)) * 1e9))
    return Calibration(props.last_update_date, tuple(qubits), tuple(gates),
                       f"qiskit-ibm-runtime {type(backend).__name__} snapshot")


class IBMDevice(Device):
    def __init__(self, device_id: str) -> None:
        from qiskit_ibm_runtime import fake_provider

        fake_name, name, gates = FAKES[device_id]
        self._backend = getattr(fake_provider, fake_name)()
        self._target = self._backend.target
        two_q = "ecr" if "ecr" in self._backend.operation_names else "cz"
        self.spec = DeviceSpec(
            id=device_id, name=name, provider="ibm", technology="superconducting",
            num_qubits=self._backend.num_qubits,
            coupling_map=tuple(tuple(edge) for edge in self._backend.coupling_map.get_edges()),
            native_gates=tuple(g for g in ("rz", "sx", "x", two_q) if g in self._backend.operation_names),
            max_shots=100_000, simulator=False, noisy=True, supports_classical_control=True,
            calibration=_calibration(self._backend), price=IBM_PRICE,
            description=f"Qiskit Aer with the {fake_name} calibration snapshot: {gates}",
            connectivity="heavy_hex", max_active_qubits=MAX_ACTIVE_QUBITS, max_work=MAX_WORK,
            emulation="Aer with the snapshot's noise, shot by shot",
        )
        self._two_q = two_q
        self._lock = threading.Lock()
        self._gate_errors: list | None = None
        self._compiled: BytesLRU = BytesLRU(COMPILE_CACHE_BYTES, lambda c: 2_000 + 1_000 * len(c.data))
        self._noise: BytesLRU = BytesLRU(NOISE_CACHE_BYTES, lambda model: 40_000 * (1 + len(model.noise_qubits)))

    def _compile(self, circuit: Circuit, shots: int):  # a transpiled QuantumCircuit
        checked(circuit, shots, self.spec, shot_by_shot=True)
        key = circuit.fingerprint or None
        found = self._compiled.get(key) if key else None
        if found is None:
            from qiskit import transpile

            # Physical qubits ($n) stay where the circuit put them; the router may still add SWAPs.
            layout = list(range(circuit.num_qubits)) if circuit.physical else None
            with self._lock:  # the transpiler is not re-entrant on one target
                found = transpile(to_qiskit(circuit), self._backend, optimization_level=1, seed_transpiler=11,
                                  initial_layout=layout)
            if key:
                self._compiled.put(key, found)
        return found

    def _active(self, compiled) -> tuple[int, ...]:
        return tuple(sorted({compiled.find_bit(q).index for inst in compiled.data for q in inst.qubits}))

    def noise_model(self, active: tuple[int, ...]):
        """The snapshot's noise on these physical qubits only (cached by qubit set, bounded in bytes)."""
        return self._noise.get_or_make(active, lambda: self._noise_model(active))

    def _noise_model(self, active: tuple[int, ...]):
        from qiskit_aer.noise import NoiseModel, ReadoutError

        model = NoiseModel(basis_gates=list(self.spec.native_gates))
        chosen = set(active)
        for name, qubits, error in self._device_gate_errors():
            if set(qubits) <= chosen:
                model.add_quantum_error(error, name, qubits)
        props = {q.qubit: q for q in self.spec.calibration.qubits}
        for q in active:
            p10 = props[q].prob_meas1_prep0 or props[q].readout_error
            p01 = props[q].prob_meas0_prep1 or props[q].readout_error
            model.add_readout_error(ReadoutError([[1 - p10, p10], [p01, 1 - p01]]), [q])
        return model

    def _device_gate_errors(self) -> list:
        """Aer's gate errors for every gate of the snapshot, made once (about 2 s for 127 qubits)."""
        with self._lock:
            if self._gate_errors is None:
                from qiskit_aer.noise.device import basic_device_gate_errors

                self._gate_errors = basic_device_gate_errors(target=self._target)
            return self._gate_errors

    def run(self, circuit: Circuit, shots: int, seed: int | None = None) -> RunResult:
        from qiskit_aer import AerSimulator

        compiled = self._compile(circuit, shots)
        started = time.perf_counter()
        if not circuit.num_clbits:
            counts = {"": shots}
        else:
            simulator = AerSimulator(noise_model=self.noise_model(self._active(compiled)))
            options = {"shots": shots} | ({"seed_simulator": seed} if seed else {})
            raw = simulator.run(compiled, **options).result().get_counts()
            counts = counts_of(raw, circuit.num_clbits)
        return RunResult(counts, shots, compiled.depth(), compiled.num_nonlocal_gates(),
                         time.perf_counter() - started)

    def assess(self, circuit: Circuit, shots: int) -> Assessment:
        compiled = self._compile(circuit, shots)
        probability = 1.0
        clock: dict[int, float] = {}
        for inst in compiled.data:
            name = inst.operation.name
            qargs = tuple(compiled.find_bit(q).index for q in inst.qubits)
            props = self._target[name].get(qargs) if name in self._target.operation_names else None
            if props is not None and name not in _VIRTUAL or props is not None and name == "measure":
                probability *= 1.0 - (props.error or 0.0)
            duration = (props.duration or 0.0) if props is not None else 0.0
            start = max((clock.get(q, 0.0) for q in qargs), default=0.0)
            for q in qargs:
                clock[q] = start + duration
        shot_s = max(clock.values(), default=0.0)
        seconds = estimated_execution_s(shots, shot_s, REP_DELAY_S, TASK_OVERHEAD_S)
        return Assessment(compiled.depth(), compiled.num_nonlocal_gates(), seconds, max(0.0, probability))


def devices(ids: Iterable[str]) -> dict[str, Device]:
    return {device_id: IBMDevice(device_id) for device_id in FAKES if device_id in ids}
