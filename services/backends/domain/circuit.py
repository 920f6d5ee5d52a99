"""A neutral circuit: OpenQASM 2.0 and 3.0 parsed into flat operations that every vendor adapter can build from.

Pure Python, no SDK. Custom `gate` definitions are expanded inline; registers are flattened in declaration
order (the first qubit of the first register is qubit 0; the same for classical bits). Parse errors are
InvalidQasm with the line and column of the offending token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from qnet_common import errors

#: Standard gates: name -> (number of parameters, number of qubits). qelib1.inc and stdgates.inc aliases
#: are folded into these names.
GATES: dict[str, tuple[int, int]] = {
    "id": (0, 1), "x": (0, 1), "y": (0, 1), "z": (0, 1), "h": (0, 1), "s": (0, 1), "sdg": (0, 1), "t": (0, 1),
    "tdg": (0, 1), "sx": (0, 1), "sxdg": (0, 1), "rx": (1, 1), "ry": (1, 1), "rz": (1, 1), "p": (1, 1),
    "u": (3, 1), "cx": (0, 2), "cy": (0, 2), "cz": (0, 2), "ch": (0, 2), "swap": (0, 2), "crx": (1, 2),
    "cry": (1, 2), "crz": (1, 2), "cp": (1, 2), "rzz": (1, 2), "rxx": (1, 2), "ccx": (0, 3), "cswap": (0, 3),
}
ALIASES = {"u1": "p", "phase": "p", "u3": "u", "U": "u", "CX": "cx", "cnot": "cx", "cu1": "cp", "cphase": "cp",
           "toffoli": "ccx", "fredkin": "cswap", "i": "id"}
#: u2(phi, lambda) = u(pi/2, phi, lambda); u0 is an identity of some duration.
SPECIAL = {"u2": (2, 1), "u0": (1, 1), "iswap": (0, 2), "cu3": (3, 2), "sxdg": (0, 1)}
TWO_QUBIT = frozenset(name for name, (_, n) in GATES.items() if n == 2)


@dataclass(frozen=True)
class Op:
    """One operation on flattened qubit and bit indices. `name` is a GATES key, "measure" or "reset"."""

    name: str
    qubits: tuple[int, ...]
    params: tuple[float, ...] = ()
    clbits: tuple[int, ...] = ()
    #: Classical control: (the creg's bit indices, value), as in `if (c == 3) x q[0];`.
    condition: tuple[tuple[int, ...], int] | None = None


@dataclass(frozen=True)
class Circuit:
    num_qubits: int
    num_clbits: int
    ops: tuple[Op, ...]
    source_version: str = "2.0"

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


# --- lexing ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<ws>[ \t\r\f\v]+)|(?P<nl>\n)|(?P<comment>//[^\n]*)|(?P<block>/\*.*?\*/)"
    r"|(?P<num>(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?)|(?P<id>[A-Za-z_][A-Za-z_0-9]*|π)"
    r"|(?P<str>\"[^\"\n]*\")|(?P<op>->|==|\*\*|[{}()\[\];,+\-*/^=@<>!:])",
    re.S,
)


@dataclass
class _Tok:
    kind: str
    text: str
    line: int
    col: int


def _lex(source: str) -> list[_Tok]:
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise errors.InvalidQasm(
                f"unexpected character {source[pos]!r} at line {line}, column {pos - line_start + 1}"
            )
        kind = match.lastgroup
        text = match.group()
        if kind in ("num", "id", "str", "op"):
            tokens.append(_Tok(kind, text, line, pos - line_start + 1))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + text.rfind("\n") + 1
        pos = match.end()
    tokens.append(_Tok("eof", "", line, pos - line_start + 1))
    return tokens


# --- parsing -----------------------------------------------------------------------------------------------

_FUNCS: dict[str, Callable[[float], float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log, "sqrt": math.sqrt,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "arcsin": math.asin, "arccos": math.acos,
    "arctan": math.atan,
}
_UNSUPPORTED_3 = {"for", "while", "def", "defcal", "cal", "input", "output", "const", "let", "box", "delay",
                  "switch", "int", "uint", "float", "angle", "bool", "duration", "stretch", "extern", "return",
                  "break", "continue", "ctrl", "inv", "pow", "negctrl", "gphase", "array", "complex", "end"}


@dataclass
class _GateDef:
    params: list[str]
    qubits: list[str]
    body: list[tuple[_Tok, list, list[tuple[str, int | None]]]] = field(default_factory=list)


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _lex(source)
        self.i = 0
        self.qregs: dict[str, tuple[int, int]] = {}
        self.cregs: dict[str, tuple[int, int]] = {}
        self.nq = 0
        self.nc = 0
        self.ops: list[Op] = []
        self.gates: dict[str, _GateDef] = {}
        self.version = "2.0"

    # token helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str, tok: _Tok | None = None) -> errors.InvalidQasm:
        tok = tok or self.tok
        return errors.InvalidQasm(f"{message} at line {tok.line}, column {tok.col}", line=tok.line, column=tok.col)

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        tok = self.tok
        if (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            wanted = repr(text) if text else kind
            found = repr(tok.text) if tok.text else "end of input"
            raise self.error(f"expected {wanted}, found {found}")
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.tok.text == text:
            self.i += 1
            return True
        return False

    # program
    def parse(self) -> Circuit:
        if self.tok.text == "OPENQASM":
            self.i += 1
            version = self.take(kind="num").text
            if not version.startswith(("2", "3")):
                raise self.error(f"unsupported OpenQASM version {version}; send 2.0 or 3.0", self.toks[self.i - 1])
            self.version = version
            self.take(";")
        while self.tok.kind != "eof":
            self.statement()
        if self.nq == 0:
            raise errors.InvalidQasm("the circuit declares no qubits: add `qreg q[n];` (or `qubit[n] q;`)")
        return Circuit(self.nq, self.nc, tuple(self.ops), self.version)

    def statement(self) -> None:
        tok = self.tok
        word = tok.text
        if word == "include":
            self.i += 1
            self.take(kind="str")
            self.take(";")
        elif word in ("qreg", "creg"):
            self.i += 1
            name = self.take(kind="id").text
            self.take("[")
            size = int(self.take(kind="num").text)
            self.take("]")
            self.take(";")
            self.declare(name, size, quantum=word == "qreg", tok=tok)
        elif word in ("qubit", "bit"):
            self.i += 1
            size = 1
            if self.accept("["):
                size = int(self.take(kind="num").text)
                self.take("]")
            name = self.take(kind="id").text
            self.take(";")
            self.declare(name, size, quantum=word == "qubit", tok=tok)
        elif word in ("gate", "opaque"):
            self.gate_definition(opaque=word == "opaque")
        elif word == "barrier":
            self.i += 1
            while self.tok.text != ";":
                self.i += 1
            self.take(";")
        elif word == "measure":
            self.i += 1
            qubits = self.operand(quantum=True)
            self.take("->")
            bits = self.operand(quantum=False)
            self.take(";")
            self.measure(qubits, bits, tok)
        elif word == "reset":
            self.i += 1
            for q in self.operand(quantum=True):
                self.ops.append(Op("reset", (q,)))
            self.take(";")
        elif word == "if":
            self.conditional()
        elif tok.kind == "id" and word in self.cregs and self.toks[self.i + 1].text in ("=", "["):
            # OpenQASM 3: c = measure q;  c[0] = measure q[0];
            bits = self.operand(quantum=False)
            self.take("=")
            self.take("measure")
            qubits = self.operand(quantum=True)
            self.take(";")
            self.measure(qubits, bits, tok)
        elif word in _UNSUPPORTED_3 or word == "@":
            raise self.error(f"OpenQASM 3 feature '{word}' is not supported; use gates, measure, reset, barrier"
                             " and if")
        elif tok.kind == "id":
            self.gate_call(None)
        else:
            raise self.error(f"unexpected {word!r}")

    def declare(self, name: str, size: int, *, quantum: bool, tok: _Tok) -> None:
        if name in self.qregs or name in self.cregs:
            raise self.error(f"register {name!r} is declared twice", tok)
        if size <= 0:
            raise self.error(f"register {name!r} must have at least one bit", tok)
        if quantum:
            self.qregs[name] = (self.nq, size)
            self.nq += size
        else:
            self.cregs[name] = (self.nc, size)
            self.nc += size

    def operand(self, *, quantum: bool) -> list[int]:
        tok = self.take(kind="id")
        registers = self.qregs if quantum else self.cregs
        if tok.text not in registers:
            kind = "quantum" if quantum else "classical"
            raise self.error(f"unknown {kind} register {tok.text!r}", tok)
        start, size = registers[tok.text]
        if self.accept("["):
            index_tok = self.take(kind="num")
            index = int(index_tok.text)
            self.take("]")
            if index >= size:
                raise self.error(f"index {index} is out of range for {tok.text}[{size}]", index_tok)
            return [start + index]
        return list(range(start, start + size))

    def measure(self, qubits: list[int], bits: list[int], tok: _Tok, condition=None) -> None:  # noqa: ANN001
        if len(qubits) != len(bits):
            raise self.error(f"measure maps {len(qubits)} qubits to {len(bits)} bits; sizes must match", tok)
        for q, c in zip(qubits, bits, strict=True):
            self.ops.append(Op("measure", (q,), clbits=(c,), condition=condition))

    def conditional(self) -> None:
        tok = self.take("if")
        self.take("(")
        name_tok = self.take(kind="id")
        if name_tok.text not in self.cregs:
            raise self.error(f"unknown classical register {name_tok.text!r}", name_tok)
        start, size = self.cregs[name_tok.text]
        bits = tuple(range(start, start + size))
        if self.accept("["):
            index = int(self.take(kind="num").text)
            self.take("]")
            bits = (start + index,)
        self.take("==")
        value = int(self.take(kind="num").text)
        self.take(")")
        condition = (bits, value)
        if self.tok.text == "measure":
            self.i += 1
            qubits = self.operand(quantum=True)
            self.take("->")
            targets = self.operand(quantum=False)
            self.take(";")
            self.measure(qubits, targets, tok, condition)
        elif self.tok.text == "reset":
            self.i += 1
            for q in self.operand(quantum=True):
                self.ops.append(Op("reset", (q,), condition=condition))
            self.take(";")
        else:
            self.gate_call(condition)

    def gate_definition(self, *, opaque: bool) -> None:
        self.i += 1
        name_tok = self.take(kind="id")
        params: list[str] = []
        if self.accept("("):
            while not self.accept(")"):
                params.append(self.take(kind="id").text)
                self.accept(",")
        qubits = [self.take(kind="id").text]
        while self.accept(","):
            qubits.append(self.take(kind="id").text)
        definition = _GateDef(params, qubits)
        if opaque:
            self.take(";")
            raise self.error(f"opaque gate {name_tok.text!r} has no definition to run", name_tok)
        self.take("{")
        while not self.accept("}"):
            if self.tok.kind == "eof":
                raise self.error(f"gate {name_tok.text!r} is not closed with '}}'", name_tok)
            if self.tok.text == "barrier":
                while not self.accept(";"):
                    self.i += 1
                continue
            call_tok = self.take(kind="id")
            args: list = []
            if self.accept("(") and not self.accept(")"):
                args.append(self.expression_tokens())
                while self.accept(","):
                    args.append(self.expression_tokens())
                self.take(")")
            targets = [self.take(kind="id")]
            while self.accept(","):
                targets.append(self.take(kind="id"))
            self.take(";")
            for target in targets:
                if target.text not in qubits:
                    raise self.error(f"{target.text!r} is not a qubit argument of gate {name_tok.text!r}", target)
            definition.body.append((call_tok, args, [(t.text, None) for t in targets]))
        self.gates[name_tok.text] = definition

    def expression_tokens(self) -> list[_Tok]:
        """The tokens of one parameter expression, evaluated when the gate is called."""
        depth, start = 0, self.i
        while True:
            text = self.tok.text
            if self.tok.kind == "eof":
                raise self.error("unterminated parameter list")
            if text == "(":
                depth += 1
            elif text == ")":
                if depth == 0:
                    break
                depth -= 1
            elif text == "," and depth == 0:
                break
            self.i += 1
        return self.toks[start:self.i]

    def gate_call(self, condition) -> None:  # noqa: ANN001
        name_tok = self.take(kind="id")
        params: list[float] = []
        if self.accept("(") and not self.accept(")"):
            params.append(_Expr(self.expression_tokens(), {}, self).value())
            while self.accept(","):
                params.append(_Expr(self.expression_tokens(), {}, self).value())
            self.take(")")
        operands = [self.operand(quantum=True)]
        while self.accept(","):
            operands.append(self.operand(quantum=True))
        self.take(";")
        width = max(len(o) for o in operands)
        for o in operands:
            if len(o) not in (1, width):
                raise self.error(f"registers of different sizes in a call of {name_tok.text!r}", name_tok)
        for k in range(width):
            qubits = tuple(o[k] if len(o) > 1 else o[0] for o in operands)
            if len(set(qubits)) != len(qubits):
                raise self.error(f"{name_tok.text!r} is applied to the same qubit twice", name_tok)
            self.apply(name_tok, params, qubits, condition, depth=0)

    def apply(self, tok: _Tok, params: list[float], qubits: tuple[int, ...], condition, depth: int) -> None:  # noqa: ANN001
        name = tok.text
        if depth > 50:
            raise self.error(f"gate {name!r} is defined recursively", tok)
        if name in self.gates:
            definition = self.gates[name]
            if len(params) != len(definition.params) or len(qubits) != len(definition.qubits):
                raise self.error(
                    f"gate {name!r} takes {len(definition.params)} parameters and {len(definition.qubits)} qubits,"
                    f" got {len(params)} and {len(qubits)}", tok)
            env = dict(zip(definition.params, params, strict=True))
            bind = dict(zip(definition.qubits, qubits, strict=True))
            for call_tok, args, targets in definition.body:
                values = [_Expr(a, env, self).value() for a in args]
                self.apply(call_tok, values, tuple(bind[t] for t, _ in targets), condition, depth + 1)
            return
        canonical = ALIASES.get(name, name)
        if canonical in SPECIAL:
            n_params, n_qubits = SPECIAL[canonical]
            self.check_arity(tok, canonical, params, qubits, n_params, n_qubits)
            if canonical == "u2":
                self.ops.append(Op("u", qubits, (math.pi / 2, params[0], params[1]), condition=condition))
            elif canonical == "u0":
                self.ops.append(Op("id", qubits, condition=condition))
            elif canonical == "iswap":
                a, b = qubits
                for op in (Op("s", (a,)), Op("s", (b,)), Op("h", (a,)), Op("cx", (a, b)), Op("cx", (b, a)),
                           Op("h", (b,))):
                    self.ops.append(Op(op.name, op.qubits, condition=condition))
            elif canonical == "cu3":
                theta, phi, lam = params
                c, t = qubits
                for op in (Op("p", (c,), ((lam + phi) / 2,)), Op("p", (t,), ((lam - phi) / 2,)), Op("cx", (c, t)),
                           Op("u", (t,), (-theta / 2, 0.0, -(phi + lam) / 2)), Op("cx", (c, t)),
                           Op("u", (t,), (theta / 2, phi, 0.0))):
                    self.ops.append(Op(op.name, op.qubits, op.params, condition=condition))
            else:
                self.ops.append(Op(canonical, qubits, tuple(params), condition=condition))
            return
        if canonical not in GATES:
            raise self.error(f"unknown gate {name!r} (define it with `gate {name} ... {{ ... }}` or use a"
                             " qelib1.inc / stdgates.inc gate)", tok)
        n_params, n_qubits = GATES[canonical]
        self.check_arity(tok, canonical, params, qubits, n_params, n_qubits)
        self.ops.append(Op(canonical, qubits, tuple(params), condition=condition))

    def check_arity(self, tok, name, params, qubits, n_params, n_qubits) -> None:  # noqa: ANN001
        if len(params) != n_params or len(qubits) != n_qubits:
            raise self.error(f"gate {name!r} takes {n_params} parameters and {n_qubits} qubits, got"
                             f" {len(params)} and {len(qubits)}", tok)


class _Expr:
    """Evaluates a parameter expression: numbers, pi, gate parameters, + - * / ^ **, functions."""

    def __init__(self, toks: list[_Tok], env: dict[str, float], parser: _Parser) -> None:
        self.toks = toks
        self.env = env
        self.parser = parser
        self.i = 0

    def value(self) -> float:
        if not self.toks:
            raise self.parser.error("empty parameter")
        result = self.sum()
        if self.i != len(self.toks):
            raise self.parser.error(f"unexpected {self.toks[self.i].text!r} in a parameter", self.toks[self.i])
        return result

    def peek(self) -> str:
        return self.toks[self.i].text if self.i < len(self.toks) else ""

    def sum(self) -> float:
        value = self.product()
        while self.peek() in ("+", "-"):
            op = self.toks[self.i].text
            self.i += 1
            value = value + self.product() if op == "+" else value - self.product()
        return value

    def product(self) -> float:
        value = self.power()
        while self.peek() in ("*", "/"):
            op = self.toks[self.i].text
            self.i += 1
            right = self.power()
            if op == "/" and right == 0:
                raise self.parser.error("division by zero in a parameter", self.toks[self.i - 1])
            value = value * right if op == "*" else value / right
        return value

    def power(self) -> float:
        base = self.unary()
        if self.peek() in ("^", "**"):
            self.i += 1
            return base ** self.power()
        return base

    def unary(self) -> float:
        if self.peek() == "-":
            self.i += 1
            return -self.unary()
        if self.peek() == "+":
            self.i += 1
            return self.unary()
        return self.atom()

    def atom(self) -> float:
        if self.i >= len(self.toks):
            last = self.toks[-1]
            raise self.parser.error("incomplete parameter expression", last)
        tok = self.toks[self.i]
        self.i += 1
        if tok.kind == "num":
            return float(tok.text)
        if tok.text == "(":
            value = self.sum()
            if self.peek() != ")":
                raise self.parser.error("expected ')' in a parameter", tok)
            self.i += 1
            return value
        if tok.text in ("pi", "π"):
            return math.pi
        if tok.text in ("tau", "τ"):
            return 2 * math.pi
        if tok.text == "euler":
            return math.e
        if tok.text in self.env:
            return self.env[tok.text]
        if tok.text in _FUNCS and self.peek() == "(":
            self.i += 1
            value = self.sum()
            if self.peek() != ")":
                raise self.parser.error("expected ')'", tok)
            self.i += 1
            try:
                return _FUNCS[tok.text](value)
            except ValueError:
                raise self.parser.error(f"{tok.text}({value}) is undefined", tok) from None
        raise self.parser.error(f"unknown name {tok.text!r} in a parameter", tok)


def parse(source: str) -> Circuit:
    """Parses OpenQASM 2.0 or 3.0; raises InvalidQasm with line and column."""
    if not source.strip():
        raise errors.InvalidQasm("the circuit is empty: send OpenQASM 2.0 or 3.0 source")
    return _Parser(source).parse()


def bitstring(bits: dict[int, int], num_clbits: int) -> str:
    """OpenQASM order: classical bit 0 is the rightmost character."""
    return "".join(str(bits.get(i, 0)) for i in reversed(range(num_clbits)))
