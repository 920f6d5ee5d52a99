"""Statements expanded into qnet's neutral operations: gate definitions, loops, broadcasts, `if` blocks and the
modifiers `ctrl @`, `negctrl @`, `inv @` and `pow(k) @`, with global phase kept wherever a control makes it
observable.

Every operation and every step counts against `limits`, so a few hundred bytes of nested definitions are
refused in milliseconds instead of expanding for minutes.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from qnet_common import errors
from services.backends.domain import gates
from services.backends.domain.circuit import Clause, Op
from services.backends.domain.qasm import limits
from services.backends.domain.qasm.parser import (
    For,
    GateCall,
    GateDef,
    If,
    Index,
    Measure,
    Reset,
    Source,
    evaluate_binary,
    evaluate_call,
    evaluate_unary,
)

#: A power: a number, or successive principal powers innermost first (see Expander.powers).
Power = float | int | tuple[float, ...]


class Expander:
    def __init__(self, source: Source) -> None:
        self.src = source
        self.ops: list[Op] = []
        self.steps = 0
        self.condition: tuple[Clause, ...] | None = None
        self.pos = 0  # the top-level statement being expanded: where budget errors point
        self.override: int | None = None  # inside a header's gate body: report errors at the call
        #: (definition, parameters) -> its body flattened to (gate, argument positions, parameters), or None
        #: when modifiers inside make it depend on more than that.
        self._templates: dict[tuple[int, tuple[float, ...]], list | None] = {}

    # --- errors and budgets ---
    def error_at(self, message: str, at: int) -> errors.InvalidArgument:
        return self.src.error(message, self.override if self.override is not None else at)

    def too_large(self, message: str) -> errors.InvalidArgument:
        return self.src.error(message, self.pos, errors.CircuitTooLarge)

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > limits.MAX_STEPS:
            raise self.too_large(f"the circuit takes more than {limits.MAX_STEPS} expansion steps (gate"
                                 " definitions, loops and modifiers); qnet expands at most that many")

    def emit(self, name: str, qubits: tuple[int, ...], params: tuple[float, ...] = (),
             clbits: tuple[int, ...] = ()) -> None:
        if params and not all(map(math.isfinite, params)):
            raise self.error_at(f"a parameter of {name} is not a finite number", self.pos)
        self.ops.append(Op(name, qubits, params, clbits, self.condition))
        if len(self.ops) > limits.MAX_OPERATIONS:
            raise self.too_large(f"the circuit expands to more than {limits.MAX_OPERATIONS} operations (gate"
                                 " definitions, loops and register broadcasts included); qnet runs at most that many")

    # --- expressions and operands ---
    def value(self, expr: object, env: dict) -> float | int:
        if not isinstance(expr, tuple):
            return expr  # type: ignore[return-value]
        kind = expr[0]
        if kind == "var":
            return env[expr[1]]
        if kind == "bin":
            return evaluate_binary(expr[1], self.value(expr[2], env), self.value(expr[3], env), self, expr[4])
        if kind == "un":
            return evaluate_unary(expr[1], self.value(expr[2], env), self, expr[3])
        return evaluate_call(expr[1], self.value(expr[2], env), self, expr[3])

    def integer(self, expr: object, env: dict, at: int, what: str) -> int:
        value = self.value(expr, env)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise self.error_at(f"{what} must be an integer, not {value!r}", at)
        return value

    def bits(self, operand: Index, env: dict) -> list[int]:
        start, size, select, at = operand
        if select is None:
            return list(range(start, start + size))
        if isinstance(select, tuple) and select and select[0] == "range":
            first = self.integer(select[1], env, at, "a range bound")
            last = self.integer(select[2], env, at, "a range bound")
            stride = self.integer(select[3], env, at, "a range step")
            for bound in (first, last):
                if not 0 <= bound < size:
                    raise self.error_at(f"index {bound} is out of range for a register of {size}", at)
            if stride == 0:
                raise self.error_at("a range step cannot be 0", at)
            return [start + k for k in range(first, last + (1 if stride > 0 else -1), stride)]
        items = select[1] if isinstance(select, tuple) and select and select[0] == "set" else (select,)
        indices = []
        for item in items:
            k = self.integer(item, env, at, "an index")
            if not 0 <= k < size:
                raise self.error_at(f"index {k} is out of range for a register of {size}", at)
            indices.append(start + k)
        return indices

    # --- statements ---
    def execute_top(self, stmt: object) -> None:
        self.pos = stmt[0]  # type: ignore[index]
        self.execute(stmt, {})

    def execute(self, stmt: object, env: dict) -> None:
        self.step()
        if isinstance(stmt, GateCall):
            self.call(stmt, env)
        elif isinstance(stmt, Measure):
            qubits, targets = self.bits(stmt.qubits, env), self.bits(stmt.bits, env)
            if len(qubits) != len(targets):
                raise self.error_at(f"measure maps {len(qubits)} qubits to {len(targets)} bits; sizes must match",
                                    stmt.pos)
            if self.condition is not None:
                read = {b for clause in self.condition for b in clause.bits}
                if read.intersection(targets):
                    raise self.src.error("a measurement inside an if block writes a bit the if reads; measure"
                                         " into another bit", stmt.pos, errors.UnsupportedInstruction)
            for q, c in zip(qubits, targets, strict=True):
                self.emit("measure", (q,), (), (c,))
        elif isinstance(stmt, Reset):
            for q in self.bits(stmt.qubits, env):
                self.emit("reset", (q,))
        elif isinstance(stmt, If):
            self.conditional(stmt, env)
        elif isinstance(stmt, For):
            self.loop(stmt, env)

    def conditional(self, stmt: If, env: dict) -> None:
        value = self.integer(stmt.value, env, stmt.pos, "the value an if compares with")
        bits = tuple(self.bits(stmt.bits, env))
        if not 0 <= value < (1 << len(bits)):
            raise self.error_at(f"{value} does not fit in the {len(bits)} bits the if compares", stmt.pos)
        outer = self.condition
        for branch, equal in ((stmt.then, stmt.equal), (stmt.orelse, not stmt.equal)):
            self.condition = (outer or ()) + (Clause(bits, value, equal),)
            for inner in branch:
                self.execute(inner, env)
        self.condition = outer

    def loop(self, stmt: For, env: dict) -> None:
        kind = stmt.values[0]
        if kind == "range":
            _, first, last, stride = stmt.values
            first = self.integer(first, env, stmt.pos, "a loop bound")
            last = self.integer(last, env, stmt.pos, "a loop bound")
            stride = self.integer(stride, env, stmt.pos, "a loop step")
            if stride == 0:
                raise self.error_at("a loop step cannot be 0", stmt.pos)
            values: range | list = range(first, last + (1 if stride > 0 else -1), stride)
        else:
            values = [self.value(item, env) for item in stmt.values[1]]
        ops, steps = _lower_bounds(stmt.body)
        if len(values) * max(1, steps) > limits.MAX_STEPS - self.steps:
            raise self.too_large(f"the loop runs {len(values)} times, {len(values) * max(1, steps)} expansion steps"
                                 f" at least; qnet expands at most {limits.MAX_STEPS} steps in a circuit")
        if len(self.ops) + len(values) * ops > limits.MAX_OPERATIONS:
            raise self.too_large(f"the loop runs {len(values)} times and emits at least {len(values) * ops}"
                                 f" operations; qnet runs at most {limits.MAX_OPERATIONS} in a circuit")
        for item in values:
            inner = {**env, stmt.var: item}
            for body_stmt in stmt.body:
                self.execute(body_stmt, inner)

    def call(self, stmt: GateCall, env: dict) -> None:
        params = tuple(float(self.value(p, env)) for p in stmt.params)
        exponent = self.powers(stmt.exponent, env)
        operands = [self.bits(o, env) for o in stmt.operands]
        width = max((len(o) for o in operands), default=1)
        for o in operands:
            if len(o) not in (1, width):
                raise self.error_at("registers of different sizes in one gate call", stmt.pos)
        n = len(stmt.controls)
        direct = not n and exponent == 1 and isinstance(stmt.target, str) and stmt.target in gates.INTRINSIC
        if isinstance(stmt.target, GateDef) and isinstance(exponent, int) and width > 1:
            # A definition broadcast over a register: its whole cost is known before the first copy expands.
            total = stmt.target.size * abs(exponent) * width
            if len(self.ops) + total > limits.MAX_OPERATIONS:
                raise self.src.error(f"{stmt.target.name} over {width} qubits expands to at least {total}"
                                     f" operations; qnet runs at most {limits.MAX_OPERATIONS} in a circuit",
                                     self.override if self.override is not None else stmt.pos, errors.CircuitTooLarge)
        for k in range(width):
            qubits = tuple(o[k] if len(o) > 1 else o[0] for o in operands)
            if len(set(qubits)) != len(qubits):
                raise self.error_at("a gate is applied to the same qubit twice", stmt.pos)
            if direct:  # an intrinsic gate as it is: emitted without the modifier machinery
                self.emit(stmt.target, qubits, params)  # type: ignore[arg-type]
                continue
            self.controlled(stmt.target, params, qubits[n:], qubits[:n], stmt.controls, exponent, ())

    def powers(self, factors: tuple, env: dict) -> Power:
        """The power a gate is raised to: a number, or the factors innermost first when a fractional power
        sits outside another (principal powers do not compose: (U^a)^b is U^(ab) only for integer b)."""
        steps: list[float | int] = []
        for expr in factors:
            f = self.value(expr, env)
            if isinstance(f, float) and f.is_integer():
                f = int(f)
            if steps and isinstance(f, int):
                steps[-1] *= f
            else:
                steps.append(f)
        if not steps:
            return 1
        return steps[0] if len(steps) == 1 else tuple(steps)

    def controlled(self, target: object, params: tuple[float, ...], qubits: tuple[int, ...],
                   new_controls: tuple[int, ...], polarity: tuple[bool, ...], exponent: Power,
                   controls: tuple[int, ...]) -> None:
        """Applies target under the outer `controls` plus `new_controls` (negctrl ones between X gates)."""
        negative = [q for q, positive in zip(new_controls, polarity, strict=True) if not positive]
        for q in negative:
            self.emit("x", (q,))
        self.apply(target, params, qubits, controls + new_controls, exponent)
        for q in negative:
            self.emit("x", (q,))

    # --- gates ---
    def apply(self, target: object, params: tuple[float, ...], qubits: tuple[int, ...],
              controls: tuple[int, ...], exponent: Power) -> None:
        if target == "gphase":
            if controls:  # a global phase under control is a phase on the (last) control
                self.apply("p", (params[0] * _product(exponent),), (controls[-1],), controls[:-1], 1)
            return
        if isinstance(target, tuple) and target[0] == "derived":  # u2, u0: an intrinsic gate, other parameters
            _, name = target
            _, base, mapping = gates.DERIVED[name]
            self.apply(base, mapping(*params), qubits, controls, exponent)
            return
        if isinstance(target, GateDef):
            self.expand_definition(target, params, qubits, controls, exponent)
            return
        if isinstance(target, tuple):  # ("mc", base, n): c3x, c3sqrtx, c4x
            _, base, n = target
            self.apply(base, (), qubits[n:], controls + qubits[:n], exponent)
            return
        spec = gates.INTRINSIC[target]  # type: ignore[index]
        if spec.base is not None and target != "cu":
            n = spec.controls
            self.apply(spec.base, params, qubits[n:], controls + qubits[:n], exponent)
            return
        if target == "cu":
            theta, phi, lam, gamma = params
            matrix = np.exp(1j * gamma) * gates.u_matrix(theta, phi, lam)
            self.unitary(self.power(matrix, exponent), qubits[1], controls + (qubits[0],))
            return
        if target in gates.COMPOSITE:
            self.composite(target, params, qubits, controls, exponent)
            return
        self.one_qubit(target, params, qubits[0], controls, exponent)

    def expand_definition(self, definition: GateDef, params: tuple[float, ...], qubits: tuple[int, ...],
                          controls: tuple[int, ...], exponent: Power) -> None:
        if isinstance(exponent, float) and exponent.is_integer():
            exponent = int(exponent)
        if not isinstance(exponent, int):
            raise self.src.error(f"pow({_describe(exponent)}) @ {definition.name}: a non-integer power is supported"
                                 " on one-qubit gates and rotations only", self.pos, errors.UnsupportedInstruction)
        if exponent == 0:
            return
        repeats = abs(exponent)
        if len(self.ops) + definition.size * repeats > limits.MAX_OPERATIONS:
            raise self.too_large(f"{definition.name} expands to at least {definition.size * repeats} operations;"
                                 f" qnet runs at most {limits.MAX_OPERATIONS} in a circuit")
        if self.steps + definition.steps * repeats > limits.MAX_STEPS or repeats * len(definition.body) > \
                limits.MAX_STEPS - self.steps:
            raise self.too_large(f"{definition.name} takes more than the {limits.MAX_STEPS} expansion steps qnet"
                                 " allows a circuit (gate definitions, loops and modifiers)")
        env = dict(zip(definition.params, params, strict=True))
        body = definition.body if exponent > 0 else tuple(reversed(definition.body))
        sign = 1 if exponent > 0 else -1
        direct = sign > 0 and not controls  # plain intrinsic calls in the body are emitted as they are
        outer_override = self.override
        if definition.source and self.override is None:
            self.override = self.pos
        try:
            template = self.template(definition, params) if direct else None
            if template is not None:
                self.step()
                for _ in range(exponent):
                    for name, where, values in template:
                        self.emit(name, tuple(qubits[k] for k in where), values)
                return
            for _ in range(abs(exponent)):
                for call in body:
                    self.step()
                    values = tuple(float(self.value(p, env)) for p in call.params)
                    if direct and not call.controls and not call.exponent and isinstance(call.target, str) \
                            and call.target in gates.INTRINSIC:
                        self.emit(call.target, tuple(qubits[a.k] for a in call.operands), values)
                        continue
                    inner = self.powers(call.exponent, env)
                    if sign < 0:  # (V^b)^-1 = V^-b: negate the outermost power
                        inner = (*inner[:-1], -inner[-1]) if isinstance(inner, tuple) else -inner
                    args = tuple(qubits[a.k] for a in call.operands)
                    n = len(call.controls)
                    self.controlled(call.target, values, args[n:], args[:n], call.controls, inner, controls)
        finally:
            self.override = outer_override

    def template(self, definition: GateDef, params: tuple[float, ...]) -> list | None:
        """The definition's body as intrinsic gates on argument positions, built once per parameter values
        (a definition calling another twice, sixteen levels deep, costs a list copy per level, not 65,536
        walks through the modifier machinery). None when a call inside has modifiers."""
        key = (id(definition), params)
        if key in self._templates:
            return self._templates[key]
        env = dict(zip(definition.params, params, strict=True))
        flat: list | None = []
        for call in definition.body:
            target = call.target
            if call.controls or call.exponent:
                flat = None
                break
            if target == "gphase":
                continue  # a global phase with no control on it changes nothing
            values = tuple(float(self.value(p, env)) for p in call.params)
            where = tuple(a.k for a in call.operands)
            if isinstance(target, str) and target in gates.INTRINSIC:
                flat.append((target, where, values))
            elif isinstance(target, GateDef):
                inner = self.template(target, values)
                if inner is None:
                    flat = None
                    break
                flat.extend((name, tuple(where[k] for k in positions), vals) for name, positions, vals in inner)
            else:
                flat = None
                break
            if len(flat) > limits.MAX_OPERATIONS:
                raise self.too_large(f"{definition.name} expands to more than {limits.MAX_OPERATIONS} operations;"
                                     " qnet runs at most that many in a circuit")
        self._templates[key] = flat
        return flat

    def composite(self, name: str, params: tuple[float, ...], qubits: tuple[int, ...],
                  controls: tuple[int, ...], exponent: Power) -> None:
        if name == "swap":
            if isinstance(exponent, float) and exponent.is_integer():
                exponent = int(exponent)
            if not isinstance(exponent, int):
                raise self.src.error(f"pow({_describe(exponent)}) @ swap: a non-integer power is supported on"
                                     " one-qubit gates and rotations only", self.pos, errors.UnsupportedInstruction)
            if exponent % 2 == 0:
                return
        else:
            params = (params[0] * _product(exponent),)
        if not controls:
            self.emit(name, qubits, params)
            return
        if name == "swap" and len(controls) == 1:
            self.emit("cswap", (controls[0], *qubits))
            return
        for sub, sub_params, where in gates.COMPOSITE[name](params[0] if params else 0.0):
            self.apply(sub, sub_params, tuple(qubits[k] for k in where), controls, 1)

    def one_qubit(self, name: str, params: tuple[float, ...], q: int, controls: tuple[int, ...],
                  exponent: Power) -> None:
        if exponent == -1:
            name, params = gates.inverse_1q(name, params)
        elif exponent != 1:
            if name in gates.ROTATIONS:  # a rotation's power scales its angle
                params = (params[0] * _product(exponent),)
            else:
                self.unitary(self.power(gates.one_qubit_matrix(name, params), exponent), q, controls)
                return
        if name == "id" and controls:
            return
        if not controls:
            self.emit(name, (q,), params)
            return
        named = gates.controlled_name(name, len(controls))
        if named is not None:
            self.emit(named, (*controls, q), params)
            return
        self.unitary(gates.one_qubit_matrix(name, params), q, controls)

    def power(self, matrix: np.ndarray, exponent: Power) -> np.ndarray:
        if isinstance(exponent, tuple):
            for step in exponent:
                matrix = self.power(matrix, step)
            return matrix
        if exponent == 1:
            return matrix
        if isinstance(exponent, int) or float(exponent).is_integer():
            return np.linalg.matrix_power(matrix, int(exponent))
        return gates.matrix_power(matrix, float(exponent))

    def unitary(self, matrix: np.ndarray, q: int, controls: tuple[int, ...]) -> None:
        """A one-qubit unitary (global phase included) under any number of controls.

        Two or more controls: C^n(M) = C(V)[c_n] · C^{n-1}X[c_n] · C(V†)[c_n] · C^{n-1}X[c_n] · C^{n-1}(V), with
        V² = M (Barenco et al. 1995, lemma 7.9); exact, with no ancilla.
        """
        if len(controls) > 1:
            cost = _controlled_cost(len(controls))
            if len(self.ops) + cost > limits.MAX_OPERATIONS:
                raise self.too_large(f"a gate with {len(controls)} controls expands to {cost} operations; qnet"
                                     f" runs at most {limits.MAX_OPERATIONS} in a circuit")
        self.step(2)  # matrix work: about twice an ordinary step
        theta, phi, lam, gamma = gates.cu_params(matrix)
        if not controls:
            self.emit("u", (q,), (theta, phi, lam))
        elif len(controls) == 1:
            self.emit("cu", (controls[0], q), (theta, phi, lam, gamma))
        else:
            root = gates.matrix_sqrt(matrix)
            last, rest = controls[-1], controls[:-1]
            self.unitary(root, q, (last,))
            self.one_qubit("x", (), last, rest, 1)
            self.unitary(root.conj().T, q, (last,))
            self.one_qubit("x", (), last, rest, 1)
            self.unitary(root, q, rest)


def _lower_bounds(body: tuple) -> tuple[int, int]:
    """(operations, steps) a block takes at least: loops with constant bounds multiply their bodies."""
    ops = steps = 0
    for stmt in body:
        if isinstance(stmt, For):
            inner_ops, inner_steps = _lower_bounds(stmt.body)
            trips = _constant_trips(stmt.values)
            ops += trips * inner_ops
            steps += 1 + trips * inner_steps
        elif isinstance(stmt, GateCall) and isinstance(stmt.target, GateDef):
            ops += stmt.target.size
            steps += 1 + stmt.target.steps
        elif isinstance(stmt, If):
            steps += 1
        else:
            ops += 0 if isinstance(stmt, GateCall) and stmt.target == "gphase" else 1
            steps += 1
    return ops, steps


def _constant_trips(values: tuple) -> int:
    if values[0] == "set":
        return len(values[1])
    _, first, last, stride = values
    if not all(isinstance(v, int) for v in (first, last, stride)) or stride == 0:
        return 0  # bounds that depend on an outer loop: counted when that loop runs
    return len(range(first, last + (1 if stride > 0 else -1), stride))


def _product(exponent: Power) -> float:
    return math.prod(exponent) if isinstance(exponent, tuple) else exponent


def _describe(exponent: Power) -> str:
    return " then ".join(map(str, exponent)) if isinstance(exponent, tuple) else str(exponent)


@functools.cache
def _controlled_cost(controls: int) -> int:
    """Operations `Expander.unitary` emits for a one-qubit unitary under this many controls."""
    if controls <= 1:
        return 1
    flips = 1 if controls - 1 <= 2 else _controlled_cost(controls - 1)  # cx, ccx, or C^{n-1}X expanded
    return 2 + 2 * flips + _controlled_cost(controls - 1)


__all__ = ["Expander"]
