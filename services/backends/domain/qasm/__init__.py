"""The circuit front door: OpenQASM 2.0 and 3.0 text read once into qnet's neutral circuit.

`parse(text)` is the only reading of a circuit; every device builds from its result. Refusals are documented
errors with line and column: INVALID_QASM (the text does not parse), CIRCUIT_TOO_LARGE (a size beyond
`limits`), UNSUPPORTED_INSTRUCTION (valid OpenQASM 3 that qnet does not run).
"""

from __future__ import annotations

import hashlib

from qnet_common import errors
from services.backends.domain.circuit import Circuit, Register
from services.backends.domain.qasm import limits
from services.backends.domain.qasm.expand import Expander
from services.backends.domain.qasm.parser import Parser, Source, load_library

_LIBRARY = load_library()


def fingerprint(text: str) -> str:
    """What identifies a circuit text in caches."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse(text: str) -> Circuit:
    """Reads OpenQASM 2.0 or 3.0; raises a documented 400 error with line and column."""
    if len(text) > limits.MAX_SOURCE_CHARS:
        raise errors.CircuitTooLarge(f"the circuit has {len(text)} characters; qnet reads at most"
                                     f" {limits.MAX_SOURCE_CHARS}")
    if not text.strip():
        raise errors.InvalidQasm("the circuit is empty: send OpenQASM 2.0 or 3.0 source")
    source = Source(text)
    expander = Expander(source)
    parser = Parser(source, expander, library=_LIBRARY)
    parser.parse()
    if parser.num_qubits == 0:
        raise errors.InvalidQasm("the circuit declares no qubits: add `qreg q[n];` (or `qubit[n] q;`)")
    return Circuit(
        num_qubits=parser.num_qubits,
        num_clbits=parser.num_clbits,
        ops=tuple(expander.ops),
        source_version=parser.version,
        cregs=tuple(Register(*r) for r in parser.creg_order),
        physical=parser.physical,
        fingerprint=fingerprint(text),
    )


__all__ = ["fingerprint", "limits", "parse"]
