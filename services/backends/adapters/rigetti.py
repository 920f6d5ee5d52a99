"""`rigetti_aspen`: Rigetti Aspen-M-3 emulated on pyQuil.

80 qubits in Aspen's octagonal lattice (two rows of five octagons, neighbouring octagons joined by two
couplers), native RX(±pi/2), RZ and CZ. Circuits are routed on the lattice and compiled to the natives here
(quilc, Rigetti's compiler, is a separate server not available offline), then evolved once, as a density
matrix, with pyQuil's gate matrices and noise from the calibration after every gate (depolarizing from the
gate error, amplitude damping and dephasing over the gate's duration from T1/T2, `pyquil.noise`), and the
shots are sampled from the final distribution through each qubit's readout assignment matrix
(`pyquil.noise.corrupt_bitstring_probs`). Above 6 active qubits the state is evolved as a wavefunction and
the gate noise applied as a global depolarizing mixture (documented approximation).

Calibration: per-qubit figures spread around Aspen-M-3's published medians (Rigetti / Amazon Braket device
page, 2022-2023: 1q fidelity 99.7 %, CZ fidelity 94.5 %, readout fidelity 95 %, T1 30 us, T2 20 us) with a
fixed seed, since no per-qubit snapshot ships offline. Price: Amazon Braket, $0.30 per task + $0.00035 per shot.
"""

from __future__ import annotations

import datetime
import time
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from qnet_common.cache import BytesLRU
from services.backends.domain.circuit import Circuit, Op
from services.backends.domain.compile import ROUTE_SWAP, rigetti_natives, route, stats
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
    circuit_duration_s,
    estimated_execution_s,
    gate_error,
    sample_counts,
    success_probability,
)

OCTAGONS, ROW = 10, 5
RX_NS, CZ_NS, READOUT_NS = 40.0, 180.0, 2000.0
MEDIAN_1Q_ERROR, MEDIAN_CZ_ERROR, MEDIAN_READOUT_ERROR = 0.003, 0.055, 0.05
MEDIAN_T1_US, MEDIAN_T2_US = 30.0, 20.0
#: Density matrices grow as 4^n: beyond this many active qubits the wavefunction path is used.
MAX_DENSITY_QUBITS = 6
#: The wavefunction path (numpy tensor contractions, one core) is bounded so that a run takes seconds.
MAX_ACTIVE_QUBITS = 20
MAX_WORK = 2e9
#: Compilations kept by circuit fingerprint (a circuit assessed, then run, or submitted again is routed once),
#: bounded in bytes; the calibration is the device's for its process's life.
COMPILE_CACHE_BYTES = 16 << 20
#: Outcome distributions kept by circuit fingerprint: a circuit run again is sampled again, not evolved again
#: (the evolution depends only on the circuit and the calibration; every run draws its own shots).
DISTRIBUTION_CACHE_BYTES = 32 << 20


def aspen_lattice() -> tuple[tuple[int, int], ...]:
    edges = []
    for k in range(OCTAGONS):
        base = 8 * k
        edges += [(base + i, base + (i + 1) % 8) for i in range(8)]
        if k % ROW != ROW - 1:  # the octagon to the right
            right = 8 * (k + 1)
            edges += [(base + 1, right + 6), (base + 2, right + 5)]
        if k < ROW:  # the octagon below
            below = 8 * (k + ROW)
            edges += [(base + 3, below + 0), (base + 4, below + 7)]
    return tuple(edges)


def aspen_calibration(edges: tuple[tuple[int, int], ...]) -> Calibration:
    rng = np.random.default_rng(20230301)
    qubits, gates = [], []
    for q in range(8 * OCTAGONS):
        t1 = float(np.clip(rng.normal(MEDIAN_T1_US, 8.0), 8.0, 80.0))
        t2 = float(np.clip(rng.normal(MEDIAN_T2_US, 6.0), 4.0, 2 * t1))
        p10 = float(np.clip(rng.normal(MEDIAN_READOUT_ERROR * 0.6, 0.01), 0.005, 0.2))
        p01 = float(np.clip(rng.normal(MEDIAN_READOUT_ERROR * 1.4, 0.015), 0.005, 0.25))
        qubits.append(QubitCalibration(q, t1, t2, (p10 + p01) / 2, p10, p01))
        gates.append(GateCalibration("rx", (q,), float(np.clip(rng.normal(MEDIAN_1Q_ERROR, 0.001), 5e-4, 0.02)),
                                     RX_NS))
        gates.append(GateCalibration("rz", (q,), 0.0, 0.0))
    for a, b in edges:
        error = float(np.clip(rng.normal(MEDIAN_CZ_ERROR, 0.02), 0.01, 0.2))
        gates.append(GateCalibration("cz", (a, b), error, CZ_NS))
    return Calibration(datetime.datetime(2023, 3, 1, tzinfo=datetime.UTC), tuple(qubits), tuple(gates),
                       "Aspen-M-3 published medians (Rigetti / Amazon Braket), seeded per-qubit spread")


def _spec() -> DeviceSpec:
    edges = aspen_lattice()
    return DeviceSpec(
        id="rigetti_aspen", name="Rigetti Aspen-M-3 (emulated)", provider="rigetti", technology="superconducting",
        num_qubits=8 * OCTAGONS, coupling_map=edges, native_gates=("rx", "rz", "cz"), max_shots=100_000,
        simulator=False, noisy=True, supports_classical_control=False, calibration=aspen_calibration(edges),
        price=PriceModel(0.30, 0.00035, source="Amazon Braket pricing for Rigetti: $0.30 per task + $0.00035/shot"),
        description="pyQuil density-matrix emulation of Aspen-M-3: octagonal lattice, RX/RZ/CZ, calibrated noise",
        connectivity="octagonal", max_active_qubits=MAX_ACTIVE_QUBITS, max_work=MAX_WORK,
        emulation="pyQuil gates on a density matrix up to 6 qubits, else a wavefunction",
    )


class RigettiAspen(Device):
    def __init__(self, *, noiseless: bool = False) -> None:
        #: noiseless: the same compilation and sampler without noise (benchmarks compare it with PyQVM).
        self._noiseless = noiseless
        # pyQuil 4 marks its reference simulators and Kraus noise deprecated in favour of v5's; they are the
        # documented offline simulators of v4, which is what this adapter pins.
        from pyquil._deprecation import PyQuilDeprecationWarning

        warnings.filterwarnings("ignore", category=PyQuilDeprecationWarning)
        self.spec = _spec()
        self._qubits = {q.qubit: q for q in self.spec.calibration.qubits}
        # Route onto the best-read qubits first.
        self._preferred = sorted(self._qubits, key=lambda q: self._qubits[q].readout_error)
        self._compiled: BytesLRU[_Compiled] = BytesLRU(COMPILE_CACHE_BYTES, lambda c: 2_000 + 500 * len(c.natives))
        self._distributions: BytesLRU[np.ndarray] = BytesLRU(DISTRIBUTION_CACHE_BYTES, lambda p: 200 + p.nbytes)

    def _compile(self, circuit: Circuit, shots: int) -> _Compiled:
        """The circuit checked for these shots, routed and in native gates (from the cache when it was before)."""
        checked(circuit, shots, self.spec, terminal_only=True)
        key = circuit.fingerprint or None
        found = self._compiled.get(key) if key else None
        if found is None:
            found = self._compiled_anew(circuit)
            if key:
                self._compiled.put(key, found)
        return found

    def _compiled_anew(self, circuit: Circuit) -> _Compiled:
        fixed = list(range(circuit.num_qubits)) if circuit.physical else None
        routed, layout, logical = route(list(circuit.ops), circuit.num_qubits, self.spec.coupling_map,
                                        self.spec.num_qubits, self._preferred, fixed)
        measured = {op.clbits[0]: op.qubits[0] for op in routed if op.name == "measure"}
        natives = rigetti_natives([op for op in routed if op.name != "measure"])
        depth, two_q = stats(natives)
        return _Compiled(
            natives, rigetti_natives([op for op in logical if op.name != "measure"]), layout, depth, two_q,
            circuit_duration_s(natives, self.spec.calibration) + READOUT_NS * 1e-9,
            success_probability(natives, self.spec.calibration, measured))

    def run(self, circuit: Circuit, shots: int, seed: int | None = None) -> RunResult:
        compiled = self._compile(circuit, shots)
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        measured = circuit.measured  # clbit -> logical qubit
        if not measured:
            counts = {"0" * circuit.num_clbits: shots}
        else:
            # Simulated on the logical qubits: the router's SWAPs only move states between physical qubits.
            active = sorted({q for op in compiled.logical_natives for q in op.qubits} | set(measured.values()))
            def evolved() -> np.ndarray:
                found = self._distribution(compiled.logical_natives, active, compiled.layout)
                found.flags.writeable = False  # shared by every later run of the circuit
                return found

            key = circuit.fingerprint
            probabilities = self._distributions.get_or_make(key, evolved) if key else evolved()
            bit_of_qubit = {q: i for i, q in enumerate(active)}
            counts = sample_counts(probabilities, bit_of_qubit, measured, circuit.num_clbits, shots, rng)
        return RunResult(counts, shots, compiled.depth, compiled.two_qubit_gates, time.perf_counter() - started)

    def _two_qubit_error(self, a: int, b: int) -> tuple[float, float]:
        error, duration = gate_error(self.spec.calibration, "cz", (a, b))
        return (error, duration) if duration else (MEDIAN_CZ_ERROR, CZ_NS)

    def _distribution(self, natives: list[Op], active: list[int], layout: dict[int, int]) -> np.ndarray:
        """Outcome probabilities over the active logical qubits (index bit i = active[i]), with the noise of
        the physical qubits they occupy and the readout errors included.

        Gates and Kraus maps are pyQuil's own (`pyquil.simulation.matrices`, `pyquil.noise`); they are applied
        with tensor contractions on the touched axes instead of pyQuil's reference simulators, which lift every
        gate to a dense 2^n x 2^n matrix (minutes for a 10-qubit QASMBench circuit; see bench/).
        """
        from pyquil.noise import corrupt_bitstring_probs, damping_after_dephasing
        from pyquil.simulation import matrices
        from pyquil.simulation._reference import KRAUS_OPS

        index = {q: i for i, q in enumerate(active)}
        n = len(active)
        state = _State(n, dense=n <= MAX_DENSITY_QUBITS)
        cz = np.asarray(matrices.QUANTUM_GATES["CZ"], dtype=complex).reshape(2, 2, 2, 2)
        survival = 1.0
        for op in natives:
            targets = [index[q] for q in op.qubits]
            physical = [layout[q] for q in op.qubits]
            if op.name == "rz":
                state.apply(np.asarray(matrices.QUANTUM_GATES["RZ"](op.params[0])), targets)
                continue
            if op.name == ROUTE_SWAP:
                one_cz, one_ns = self._two_qubit_error(*physical) if len(physical) == 2 else (MEDIAN_CZ_ERROR, CZ_NS)
                error, duration_ns = 1 - (1 - one_cz) ** 3, 3 * one_ns
            elif op.name == "rx":
                state.apply(np.asarray(matrices.QUANTUM_GATES["RX"](op.params[0])), targets)
                error, duration_ns = gate_error(self.spec.calibration, "rx", tuple(physical))
            else:
                state.apply(cz, targets)
                error, duration_ns = self._two_qubit_error(*physical)
            if self._noiseless:
                continue
            if not state.dense:
                survival *= 1.0 - error
                continue
            # Depolarizing with average infidelity `error` (shared by the gate's qubits), then relaxation.
            p = min(0.75, 1.5 * error / len(targets))
            for q, t in zip(physical, targets, strict=True):
                if p > 1e-12:
                    state.channel(KRAUS_OPS["depolarizing"](p=p), t)
                cal = self._qubits[q]
                state.channel(damping_after_dephasing(cal.t1_us * 1e-6, cal.t2_us * 1e-6, duration_ns * 1e-9), t)
        probs = state.probabilities()  # axis i = qubit i, as corrupt_bitstring_probs wants
        if not state.dense:
            probs = survival * probs + (1.0 - survival) / probs.size
        readout = [self._qubits[layout[q]] for q in active]
        matrices_ro = [np.array([[1 - r.prob_meas1_prep0, r.prob_meas0_prep1],
                                 [r.prob_meas1_prep0, 1 - r.prob_meas0_prep1]]) for r in readout]
        noisy = probs / probs.sum() if self._noiseless else corrupt_bitstring_probs(probs / probs.sum(), matrices_ro)
        # Flatten with qubit 0 as the least significant bit of the index.
        return np.clip(noisy.transpose(list(reversed(range(n)))).reshape(-1), 0.0, None)

    def assess(self, circuit: Circuit, shots: int) -> Assessment:
        compiled = self._compile(circuit, shots)
        seconds = estimated_execution_s(shots, compiled.shot_s, 100e-6, 1.0)
        return Assessment(compiled.depth, compiled.two_qubit_gates, seconds, compiled.success_probability)


class _Compiled(NamedTuple):
    """A circuit compiled for the device, and what its assessment needs that does not depend on the shots."""

    natives: list[Op]  # on physical qubits
    logical_natives: list[Op]  # on logical qubits (what the simulation runs)
    layout: dict[int, int]  # final logical -> physical qubit
    depth: int
    two_qubit_gates: int
    shot_s: float
    success_probability: float


class _State:
    """A state vector, or a density matrix when noise channels are simulated exactly, with axis i = qubit i."""

    def __init__(self, n: int, *, dense: bool) -> None:
        self.n = n
        self.dense = dense
        shape = (2,) * (2 * n if dense else n)
        self.data = np.zeros(shape, dtype=complex)
        self.data[(0,) * len(shape)] = 1.0

    def _contract(self, matrix: np.ndarray, axes: list[int]) -> None:
        k = len(axes)
        tensor = matrix.reshape((2,) * (2 * k))
        moved = np.tensordot(tensor, self.data, axes=(list(range(k, 2 * k)), axes))
        self.data = np.moveaxis(moved, list(range(k)), axes)

    def apply(self, gate: np.ndarray, targets: list[int]) -> None:
        gate = gate.reshape(2 ** len(targets), 2 ** len(targets))
        self._contract(gate, targets)
        if self.dense:  # rho -> U rho U^dagger: the column axes take the conjugate
            self._contract(gate.conj(), [self.n + t for t in targets])

    def channel(self, kraus: list[np.ndarray], target: int) -> None:
        before = self.data
        total = np.zeros_like(before)
        for k in kraus:
            self.data = before
            self.apply(np.asarray(k, dtype=complex), [target])
            total += self.data
        self.data = total

    def probabilities(self) -> np.ndarray:
        if not self.dense:
            return np.abs(self.data) ** 2
        size = 2**self.n
        diagonal = np.real(np.diagonal(self.data.reshape(size, size)))
        return np.clip(diagonal, 0.0, None).reshape((2,) * self.n)


def devices(ids: Iterable[str]) -> dict[str, Device]:
    return {"rigetti_aspen": RigettiAspen()} if "rigetti_aspen" in ids else {}


__all__ = ["RigettiAspen", "aspen_lattice", "devices"]
