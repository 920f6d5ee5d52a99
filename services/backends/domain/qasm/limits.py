"""How much circuit qnet reads: every size a circuit controls is checked against these before anything is
allocated or expanded. Each limit has a documented refusal (README, "Circuits")."""

from __future__ import annotations

#: Characters of OpenQASM source: gRPC's default message limit (through Envoy, its 1 MiB body limit comes first).
MAX_SOURCE_CHARS = 4 << 20
#: Qubits and classical bits all registers declare together, and the highest physical qubit ($n) plus one.
MAX_QUBITS = 1024
MAX_CLBITS = 1024
#: Operations after expanding gate definitions, loops, modifiers and register broadcasts.
MAX_OPERATIONS = 200_000
#: Expansion steps: statements executed, gate bodies entered, loop iterations (bounds work that emits nothing).
MAX_STEPS = 200_000
#: Levels of gate definitions calling gate definitions; levels of nested blocks; levels of an expression.
MAX_GATE_DEPTH = 64
MAX_BLOCK_DEPTH = 32
MAX_EXPRESSION_DEPTH = 64
#: Control qubits on one gate (`ctrl(n) @`), after definitions are expanded.
MAX_CONTROLS = 16
