"""Qiskit plumbing shared by the IBM devices and the local Aer simulator: qnet's neutral circuit built as a
Qiskit circuit (no second reading of the text), and Qiskit's counts read back in OpenQASM order."""

from __future__ import annotations

import itertools

from services.backends.domain.circuit import Circuit, Clause


def _gate_classes() -> dict:
    from qiskit.circuit import library as lib

    return {
        "id": lib.IGate, "x": lib.XGate, "y": lib.YGate, "z": lib.ZGate, "h": lib.HGate, "s": lib.SGate,
        "sdg": lib.SdgGate, "t": lib.TGate, "tdg": lib.TdgGate, "sx": lib.SXGate, "sxdg": lib.SXdgGate,
        "rx": lib.RXGate, "ry": lib.RYGate, "rz": lib.RZGate, "p": lib.PhaseGate, "u": lib.UGate,
        "cx": lib.CXGate, "cy": lib.CYGate, "cz": lib.CZGate, "ch": lib.CHGate, "csx": lib.CSXGate,
        "crx": lib.CRXGate, "cry": lib.CRYGate, "crz": lib.CRZGate, "cp": lib.CPhaseGate, "cu": lib.CUGate,
        "ccx": lib.CCXGate, "swap": lib.SwapGate, "rzz": lib.RZZGate, "rxx": lib.RXXGate, "cswap": lib.CSwapGate,
    }


_CLASSES: dict | None = None


def to_qiskit(circuit: Circuit):  # a qiskit QuantumCircuit
    """The circuit as a Qiskit QuantumCircuit: one quantum register `q`, the classical registers as declared,
    classically controlled operations as `if_test` blocks (an else branch for `!=`)."""
    from qiskit.circuit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.library import Measure, Reset

    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _gate_classes()
    classes = _CLASSES
    qreg = QuantumRegister(circuit.num_qubits, "q")
    cregs = [ClassicalRegister(r.size, r.name) for r in circuit.cregs]
    qc = QuantumCircuit(qreg, *cregs)
    clbits = qc.clbits
    by_range = {(r.start, r.size): reg for r, reg in zip(circuit.cregs, cregs, strict=True)}
    measure, reset = Measure(), Reset()

    def add(target, ops) -> None:
        for op in ops:
            qubits = [qreg[q] for q in op.qubits]
            if op.name == "measure":
                target.append(measure, qubits, [clbits[op.clbits[0]]], copy=False)
            elif op.name == "reset":
                target.append(reset, qubits, copy=False)
            else:
                target.append(classes[op.name](*op.params), qubits, copy=False)

    def block(ops, depth: int) -> None:
        for condition, group in itertools.groupby(ops, key=lambda op: (op.condition or ())[depth:depth + 1]):
            group = list(group)
            if not condition:
                add(qc, group)
                continue
            clause: Clause = condition[0]
            operand = clbits[clause.bits[0]] if len(clause.bits) == 1 else by_range[clause.bits[0], len(clause.bits)]
            if clause.equal:
                with qc.if_test((operand, clause.value)):
                    block(group, depth + 1)
            else:
                with qc.if_test((operand, clause.value)) as orelse:
                    pass
                with orelse:
                    block(group, depth + 1)

    if circuit.has_classical_control:
        block(circuit.ops, 0)
    else:
        add(qc, circuit.ops)
    return qc


def counts_of(raw: dict[str, int], num_clbits: int) -> dict[str, int]:
    """Qiskit keys registers apart with spaces, last register leftmost: without the spaces that is OpenQASM's
    order over the flattened bits (bit 0 rightmost)."""
    counts: dict[str, int] = {}
    for key, value in raw.items():
        bits = key.replace(" ", "")
        bits = bits.zfill(num_clbits) if len(bits) < num_clbits else bits
        counts[bits] = counts.get(bits, 0) + int(value)
    return counts
