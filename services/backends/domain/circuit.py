"""qnet's neutral circuit: flat operations on flattened qubit and bit indices, which every adapter builds from.

Pure Python, no SDK. Produced once per circuit text by the OpenQASM front door (`domain/qasm/`): registers are
flattened in declaration order (the first qubit of the first register is qubit 0; the same for classical
bits), gate definitions, loops and modifiers are expanded into the gates of `gates.INTRINSIC`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Clause(NamedTuple):
    """`bits == value` (or `!=` when `equal` is False), bits read as an integer with bits[0] least significant."""

    bits: tuple[int, ...]
    value: int
    equal: bool = True


class Op(NamedTuple):
    """One operation. `name` is a gates.INTRINSIC key, "measure" or "reset"."""

    name: str
    qubits: tuple[int, ...]
    params: tuple[float, ...] = ()
    clbits: tuple[int, ...] = ()
    #: Classical control: every clause must hold (nested `if` blocks), or None.
    condition: tuple[Clause, ...] | None = None


class Register(NamedTuple):
    name: str
    start: int
    size: int


@dataclass(frozen=True)
class Circuit:
    num_qubits: int
    num_clbits: int
    ops: tuple[Op, ...]
    source_version: str = "2.0"
    cregs: tuple[Register, ...] = ()
    #: True when the circuit names physical qubits ($0, $1, ...): qubit i is the device's qubit i.
    physical: bool = False
    #: The digest of the text it was read from (compilation caches key on it); empty when built in code.
    fingerprint: str = ""

    @property
    def measured(self) -> dict[int, int]:
        """clbit -> qubit of the last measurement into each bit."""
        result: dict[int, int] = {}
        for op in self.ops:
            if op.name == "measure":
                result[op.clbits[0]] = op.qubits[0]
        return result

    @property
    def active_qubits(self) -> tuple[int, ...]:
        return tuple(sorted({q for op in self.ops for q in op.qubits}))

    @property
    def has_classical_control(self) -> bool:
        return any(op.condition is not None for op in self.ops)

    @property
    def measurements_are_terminal(self) -> bool:
        """True when no gate, reset or second measurement follows a measurement on the same qubit."""
        measured: set[int] = set()
        for op in self.ops:
            if op.name == "measure":
                if op.qubits[0] in measured:
                    return False
                measured.add(op.qubits[0])
            elif measured.intersection(op.qubits) or op.condition is not None:
                return False
        return True

    @property
    def has_reset(self) -> bool:
        return any(op.name == "reset" for op in self.ops)

    def depth(self) -> int:
        levels = [0] * max(1, self.num_qubits)
        for op in self.ops:
            level = 1 + max(levels[q] for q in op.qubits)
            for q in op.qubits:
                levels[q] = level
        return max(levels) if self.ops else 0

    @property
    def two_qubit_gates(self) -> int:
        return sum(1 for op in self.ops if len(op.qubits) == 2)

    def approximate_bytes(self) -> int:
        """What this circuit holds in memory, for caches bounded in bytes."""
        return 400 + 180 * len(self.ops)


def bitstring(bits: dict[int, int], num_clbits: int) -> str:
    """OpenQASM order: classical bit 0 is the rightmost character."""
    return "".join(str(bits.get(i, 0)) for i in reversed(range(num_clbits)))
