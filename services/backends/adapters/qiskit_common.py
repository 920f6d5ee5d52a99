"""Qiskit plumbing shared by the IBM devices and the local Aer simulator (both on Qiskit's own SDK)."""

from __future__ import annotations

from qnet_common import errors
from services.backends.domain.circuit import Circuit


def load(qasm: str, circuit: Circuit):  # noqa: ANN201 - a qiskit QuantumCircuit
    """The circuit as Qiskit reads it, registers and conditions kept (already validated by our parser)."""
    from qiskit import qasm2, qasm3

    try:
        if circuit.source_version.startswith("3"):
            return qasm3.loads(qasm)
        return qasm2.loads(qasm, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except Exception as error:  # Qiskit's stricter reading (a register named like a gate, say): still a 400
        raise errors.InvalidQasm(f"Qiskit cannot read this circuit: {error}") from None


def counts_of(raw: dict[str, int], num_clbits: int) -> dict[str, int]:
    """Qiskit keys registers apart with spaces, last register leftmost: without the spaces that is OpenQASM's
    order over the flattened bits (bit 0 rightmost)."""
    counts: dict[str, int] = {}
    for key, value in raw.items():
        bits = key.replace(" ", "")
        bits = bits.zfill(num_clbits) if len(bits) < num_clbits else bits
        counts[bits] = counts.get(bits, 0) + int(value)
    return counts
