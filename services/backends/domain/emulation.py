"""Rules every device emulation shares: input checks, success-probability estimates, run-time estimates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from qnet_common import errors
from services.backends.domain.circuit import Circuit, Op
from services.backends.domain.device import Calibration, DeviceSpec


def checked(circuit: Circuit, shots: int, spec: DeviceSpec, *, terminal_only: bool = False,
            shot_by_shot: bool = False) -> Circuit:
    """Checks a circuit against a device; raises the documented 400 errors.

    `shot_by_shot`: the emulation simulates each shot on its own (noise sampled per trajectory), so its work
    grows with the shots.
    """
    if not 1 <= shots <= spec.max_shots:
        raise errors.InvalidShots(f"shots={shots} is out of range for {spec.id}: send 1 to {spec.max_shots}",
                                  backend=spec.id)
    if circuit.num_qubits > spec.num_qubits:
        raise errors.CircuitTooLarge(
            f"the circuit declares {circuit.num_qubits} qubits but {spec.id} has {spec.num_qubits}; use a wider"
            " backend or fewer qubits", backend=spec.id)
    if circuit.has_classical_control and not spec.supports_classical_control:
        raise errors.UnsupportedInstruction(
            f"{spec.id} cannot run classically controlled operations (if); use local_simulator or an IBM backend",
            backend=spec.id)
    if terminal_only and (not circuit.measurements_are_terminal or circuit.has_reset):
        raise errors.UnsupportedInstruction(
            f"{spec.id} runs only circuits whose measurements come last and that have no reset; use"
            " local_simulator or an IBM backend for mid-circuit measurement", backend=spec.id)
    active = len(circuit.active_qubits)
    if spec.max_active_qubits and active > spec.max_active_qubits:
        raise errors.CircuitTooLarge(
            f"the circuit acts on {active} qubits; {spec.id} ({spec.emulation}) simulates at most"
            f" {spec.max_active_qubits} in bounded time and memory: use fewer qubits or another backend",
            backend=spec.id)
    work = len(circuit.ops) * 2.0**active * (shots if shot_by_shot else 1)
    if spec.max_work and work > spec.max_work:
        per_shot = " x shots" if shot_by_shot else ""
        raise errors.CircuitTooLarge(
            f"the circuit has {len(circuit.ops)} operations on {active} qubits: {work:.2g} amplitude updates"
            f" (operations x 2^qubits{per_shot}); {spec.id} ({spec.emulation}) runs at most {spec.max_work:.2g}:"
            " use fewer qubits, operations or shots, or another backend", backend=spec.id)
    return circuit


def gate_error(calibration: Calibration, gate: str, qubits: tuple[int, ...]) -> tuple[float, float]:
    """(error, duration_ns) of a native gate on physical qubits, falling back to the gate's any-qubit figure."""
    fallback = (0.0, 0.0)
    for g in calibration.gates:
        if g.gate == gate:
            if g.qubits == qubits or (len(g.qubits) == 2 and g.qubits == qubits[::-1]):
                return g.error, g.duration_ns
            if not g.qubits:
                fallback = (g.error, g.duration_ns)
    return fallback


def success_probability(native_ops: Sequence[Op], calibration: Calibration, measured: Mapping[int, int]) -> float:
    """Product of the compiled gates' fidelities and the measured qubits' readout fidelities.

    `native_ops` act on physical qubits; `measured` maps each measured clbit to its physical qubit.
    """
    readout = {q.qubit: q.readout_error for q in calibration.qubits}
    probability = 1.0
    for op in native_ops:
        if op.name in ("measure", "reset", "barrier", "rz", "id"):
            continue  # virtual Z rotations and identities cost nothing
        error, _ = gate_error(calibration, op.name, op.qubits)
        probability *= 1.0 - error
    for qubit in set(measured.values()):
        probability *= 1.0 - readout.get(qubit, 0.0)
    return max(0.0, min(1.0, probability))


def circuit_duration_s(native_ops: Sequence[Op], calibration: Calibration) -> float:
    """Critical-path duration of one shot from the gates' calibrated durations."""
    clock: dict[int, float] = {}
    for op in native_ops:
        _, duration = gate_error(calibration, op.name, op.qubits)
        start = max((clock.get(q, 0.0) for q in op.qubits), default=0.0)
        for q in op.qubits:
            clock[q] = start + duration
    return max(clock.values(), default=0.0) * 1e-9


def estimated_execution_s(shots: int, shot_duration_s: float, per_shot_overhead_s: float,
                          per_task_overhead_s: float) -> float:
    """Device time for a task: fixed overhead plus, per shot, the circuit and the reset/readout overhead."""
    return per_task_overhead_s + shots * (shot_duration_s + per_shot_overhead_s)


def sample_counts(probabilities: np.ndarray, bit_of_qubit: Mapping[int, int], measured: Mapping[int, int],
                  num_clbits: int, shots: int, rng: np.random.Generator) -> dict[str, int]:
    """Samples `shots` outcomes from a distribution over basis states and reads them out as counts.

    `bit_of_qubit[q]` is the bit of the state index holding qubit q; `measured` maps clbit -> qubit. Keys are
    OpenQASM bitstrings (classical bit 0 rightmost).
    """
    outcomes = rng.multinomial(shots, np.clip(probabilities, 0.0, None) / probabilities.sum())
    counts: dict[str, int] = {}
    for state in np.nonzero(outcomes)[0]:
        value = 0
        for clbit, qubit in measured.items():
            value |= ((int(state) >> bit_of_qubit[qubit]) & 1) << clbit
        key = format(value, f"0{num_clbits}b")
        counts[key] = counts.get(key, 0) + int(outcomes[state])
    return counts
