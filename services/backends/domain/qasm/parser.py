"""OpenQASM 2.0 and 3.0 read into statements: declarations, constants and gate definitions are resolved as
they are read; executable statements go to the expander (top level at once, bodies when called).

Hand-written on purpose: the language's reference parser (ANTLR) reads about a hundredth as fast and recurses
on nesting. Every size the text controls is checked against `limits` before anything is allocated, and every
refusal is a documented error with the line and column of the offending token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from qnet_common import errors
from services.backends.domain import gates
from services.backends.domain.qasm import limits

# --- lexing ------------------------------------------------------------------------------------------------
# One capturing group: whitespace and comments match without it and are dropped. Positions are recomputed only
# when an error needs a line and column.
_LEX = re.compile(
    r"\s+|//[^\n]*|/\*.*?\*/|("
    r"0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?|\.\d[\d_]*(?:[eE][+-]?\d+)?"
    r"|[^\W\d]\w*|\$\d+|\"[^\"\n]*\""
    r"|->|==|!=|<=|>=|<<|>>|\*\*|&&|\|\||\S)",
    re.S,
)
_EOF = ""


class Source:
    """The text and its tokens; turns a token index into a line and column for error messages."""

    def __init__(self, text: str, name: str = "") -> None:
        self.text = text
        self.name = name
        self.tokens = [t for t in _LEX.findall(text) if t]
        self.tokens.append(_EOF)
        self._starts: list[int] | None = None

    def where(self, index: int) -> tuple[int, int]:
        if self._starts is None:
            self._starts = [m.start(1) for m in _LEX.finditer(self.text) if m.group(1)]
        offset = self._starts[index] if index < len(self._starts) else len(self.text)
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def error(self, message: str, index: int, kind: type[errors.InvalidArgument] = errors.InvalidQasm,
              ) -> errors.InvalidArgument:
        line, column = self.where(index)
        origin = f" of {self.name}" if self.name else ""
        return kind(f"{message} (line {line}, column {column}{origin})", line=line, column=column)


def _is_number(tok: str) -> bool:
    return tok[:1].isdigit() or (tok[:1] == "." and len(tok) > 1)


def _is_name(tok: str) -> bool:
    return tok[:1].isalpha() or tok[:1] == "_"


# --- syntax tree -------------------------------------------------------------------------------------------
# Expressions are numbers once folded, else ("var", name) / ("un", op, a) / ("bin", op, a, b) / ("call", f, a).
Expr = object


class Index(NamedTuple):
    """A register operand: register bits [start, start + size), narrowed by `select` (None: all of them;
    an Expr: one; ("range", a, b, step) inclusive; ("set", exprs))."""

    start: int
    size: int
    select: object
    pos: int


class Arg(NamedTuple):
    """A qubit argument of the gate being defined, by position."""

    k: int


class GateCall(NamedTuple):
    pos: int
    target: object  # GateDef, an intrinsic name, ("mc", base, n) or "gphase"
    params: tuple
    operands: tuple
    #: One entry per control qubit, in operand order: True for ctrl, False for negctrl.
    controls: tuple[bool, ...]
    #: The powers of the inv (-1) and pow(k) modifiers, innermost first (empty: none).
    exponent: tuple


class Measure(NamedTuple):
    pos: int
    qubits: Index
    bits: Index


class Reset(NamedTuple):
    pos: int
    qubits: Index


class If(NamedTuple):
    pos: int
    bits: Index
    value: object
    equal: bool
    then: tuple
    orelse: tuple


class For(NamedTuple):
    pos: int
    var: str
    values: object  # ("range", a, b, step) or ("set", exprs)
    body: tuple


@dataclass
class GateDef:
    name: str
    params: tuple[str, ...]
    qubits: tuple[str, ...]
    body: tuple = ()
    #: Levels of definitions below this one (a body of intrinsic gates only: 1).
    depth: int = 1
    source: str = ""
    #: Lower bounds of the operations one call emits and the expansion steps it takes (modifiers can only add
    #: to them), so that an expansion beyond the limits is refused before it starts.
    size: int = 0
    steps: int = 0


#: Multi-controlled gates of qelib1.inc, run exactly as (base, controls) instead of their phase-free bodies.
MULTI_CONTROLLED = {"c3x": ("x", 3), "c3sqrtx": ("sx", 3), "c4x": ("x", 4)}
HEADERS = ("qelib1.inc", "stdgates.inc")
_UNSUPPORTED = {
    "while": "while loops", "def": "subroutines (def)", "defcal": "calibrations (defcal)", "cal": "cal blocks",
    "defcalgrammar": "calibration grammars", "input": "input parameters", "output": "output variables",
    "let": "aliases (let)", "box": "box", "delay": "delay", "switch": "switch", "extern": "extern functions",
    "return": "return", "break": "break", "continue": "continue", "duration": "durations",
    "stretch": "stretch", "array": "arrays", "complex": "complex numbers", "end": "end", "pragma": "pragmas",
    "int": "classical variables (only const declarations are supported)",
    "uint": "classical variables (only const declarations are supported)",
    "float": "classical variables (only const declarations are supported)",
    "angle": "classical variables (only const declarations are supported)",
    "bool": "classical variables (only const declarations are supported)",
}
_TYPES = ("int", "uint", "float", "angle", "bool", "bit")
_CONSTANTS = {"pi": math.pi, "π": math.pi, "tau": math.tau, "τ": math.tau, "euler": math.e, "ℇ": math.e,
              "true": 1, "false": 0}
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log, "log": math.log,
    "sqrt": math.sqrt, "asin": math.asin, "acos": math.acos, "atan": math.atan, "arcsin": math.asin,
    "arccos": math.acos, "arctan": math.atan, "floor": math.floor, "ceiling": math.ceil,
}
_PRECEDENCE_3 = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
                 "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}
_PRECEDENCE_2 = {"+": 9, "-": 9, "*": 10, "/": 10}
_INT_BOUND = 1 << 63


class Expanding(Protocol):
    """Where the parser hands executable statements (the expander)."""

    def execute_top(self, stmt: object) -> None: ...

    def emit(self, name: str, qubits: tuple[int, ...], params: tuple[float, ...] = ()) -> None: ...


#: Gate names the fast lane emits as they are (uncontrolled, unmodified intrinsic gates).
_FAST = {name: (gates.ALIASES.get(name, name), gates.INTRINSIC[gates.ALIASES.get(name, name)])
         for name in (*gates.INTRINSIC, *gates.ALIASES)}


class Parser:
    """Reads one source. The expander receives each top-level executable statement as soon as it is read."""

    def __init__(self, source: Source, expander: Expanding | None = None, *,
                 library: dict[str, GateDef] | None = None) -> None:
        self.src = source
        self.toks = source.tokens
        self.i = 0
        self.expander = expander
        self.library = library if library is not None else {}
        self.version = "2.0"
        self.qregs: dict[str, tuple[int, int]] = {}
        self.cregs: dict[str, tuple[int, int]] = {}
        self.creg_order: list[tuple[str, int, int]] = []
        self.num_qubits = 0
        self.num_clbits = 0
        self.physical = False
        self.consts: dict[str, float | int] = {}
        self.gates: dict[str, GateDef] = {}
        self.defining: GateDef | None = None
        self.scope: set[str] = set()  # gate parameters and loop variables visible here
        self.block_depth = 0
        self._expr_depth = 0
        self.header = False

    # --- tokens ---
    @property
    def tok(self) -> str:
        return self.toks[self.i]

    def fail(self, message: str, index: int | None = None,
             kind: type[errors.InvalidArgument] = errors.InvalidQasm) -> errors.InvalidArgument:
        return self.src.error(message, self.i if index is None else index, kind)

    def expect(self, text: str) -> int:
        if self.toks[self.i] != text:
            found = repr(self.tok) if self.tok else "the end of the circuit"
            raise self.fail(f"expected {text!r}, found {found}")
        self.i += 1
        return self.i - 1

    def accept(self, text: str) -> bool:
        if self.toks[self.i] == text:
            self.i += 1
            return True
        return False

    def name(self, what: str = "a name") -> str:
        tok = self.tok
        if not _is_name(tok):
            raise self.fail(f"expected {what}, found {tok!r}" if tok else f"expected {what}, found the end")
        self.i += 1
        return tok

    # --- program ---
    def parse(self) -> None:
        if self.tok == "OPENQASM":
            self.i += 1
            tok = self.tok
            if not _is_number(tok) or tok.split(".")[0] not in ("2", "3"):
                raise self.fail(f"unsupported OpenQASM version {tok!r}; send 2.0 or 3.0")
            self.version = "3.0" if tok.startswith("3") else "2.0"
            self.i += 1
            self.expect(";")
        while self.tok != _EOF:
            self.statement(top=True)

    def block(self) -> tuple:
        """A `{ ... }` block or a single statement, as a tuple of executable statements."""
        self.block_depth += 1
        if self.block_depth > limits.MAX_BLOCK_DEPTH:
            raise self.fail(f"blocks nest more than {limits.MAX_BLOCK_DEPTH} deep", kind=errors.CircuitTooLarge)
        body: list = []
        if self.accept("{"):
            while not self.accept("}"):
                if self.tok == _EOF:
                    raise self.fail("a block is not closed with '}'")
                body.extend(self.statement(top=False))
        else:
            body.extend(self.statement(top=False))
        self.block_depth -= 1
        return tuple(body)

    def statement(self, *, top: bool) -> list:
        """Reads one statement; returns the executable statements it makes (top level: hands them on)."""
        start = self.i
        word = self.tok
        made: list = []
        if word == "include":
            self.include(top)
        elif word in ("qreg", "creg", "qubit", "bit"):
            self.declaration(top)
        elif word == "const":
            self.const(top)
        elif word in ("gate", "opaque"):
            self.gate_definition(top)
        elif word == "barrier":
            self.i += 1
            if self.tok != ";":
                self.operand(quantum=True)
                while self.accept(","):
                    self.operand(quantum=True)
            self.expect(";")
        elif word == "measure":
            self.i += 1
            qubits = self.operand(quantum=True)
            if self.tok != "->":
                raise self.fail("write where the result goes: `measure q -> c;` or `c = measure q;`",
                                kind=errors.UnsupportedInstruction)
            self.i += 1
            bits = self.operand(quantum=False)
            self.expect(";")
            made.append(Measure(start, qubits, bits))
        elif word == "reset":
            self.i += 1
            made.append(Reset(start, self.operand(quantum=True)))
            self.expect(";")
        elif word == "if":
            made.append(self.conditional())
        elif word == "for":
            made.append(self.loop())
        elif word == "{":
            made.extend(self.block())
        elif top and self.expander is not None and self.fast_gate():
            pass
        elif word in ("ctrl", "negctrl", "inv", "pow", "gphase", "U", "CX") or (
                _is_name(word) and word not in _UNSUPPORTED and not self._is_assignment()):
            made.append(self.gate_call())
        elif _is_name(word) and word in self.cregs and self._is_assignment():
            bits = self.operand(quantum=False)
            self.expect("=")
            self.expect("measure")
            qubits = self.operand(quantum=True)
            self.expect(";")
            made.append(Measure(start, qubits, bits))
        elif word in _UNSUPPORTED:
            raise self.fail(f"qnet does not run OpenQASM 3 {_UNSUPPORTED[word]}; use gates, measure, reset,"
                            " barrier, if, for and const", kind=errors.UnsupportedInstruction)
        elif word == _EOF:
            raise self.fail("the circuit ends in the middle of a statement")
        else:
            raise self.fail(f"unexpected {word!r}")
        if self.defining is not None and any(not isinstance(s, GateCall) for s in made):
            raise self.fail("a gate body may hold only gate calls, gphase and barrier", start)
        if top and self.expander is not None:
            for stmt in made:
                self.expander.execute_top(stmt)
            return []
        return made

    def fast_gate(self) -> bool:
        """`name(params) r[i], s[j];` with an intrinsic gate at top level, emitted without building a statement
        (most of a large circuit). Anything else leaves the position unchanged for the general path."""
        toks, i = self.toks, self.i
        found = _FAST.get(toks[i])
        if found is None or toks[i] in self.gates:
            return False
        name, spec = found
        start = i
        i += 1
        params: list[float] = []
        if toks[i] == "(":
            self.i = i + 1
            if spec.params:
                value = self.expression()
                params.append(value)
                while self.accept(","):
                    params.append(self.expression())
            i = self.i
            if toks[i] != ")" or len(params) != spec.params or any(isinstance(p, tuple) for p in params):
                self.i = start
                return False
            i += 1
        elif spec.params:
            return False
        qubits: list[int] = []
        qregs = self.qregs
        while True:
            reg = qregs.get(toks[i])
            if reg is None or toks[i + 1] != "[" or not toks[i + 2].isdigit() or toks[i + 3] != "]":
                self.i = start
                return False
            k = int(toks[i + 2])
            if k >= reg[1]:
                self.i = start
                return False  # the general path reports it
            qubits.append(reg[0] + k)
            i += 4
            if toks[i] == ";":
                break
            if toks[i] != ",":
                self.i = start
                return False
            i += 1
        if len(qubits) != spec.qubits or len(set(qubits)) != len(qubits):
            self.i = start
            return False
        self.i = i + 1
        self.expander.emit(name, tuple(qubits), tuple(map(float, params)))  # type: ignore[union-attr]
        return True

    def _is_assignment(self) -> bool:
        """`c = measure q;` or `c[0] = measure q[0];` (a classical register on the left)."""
        if self.tok not in self.cregs:
            return False
        nxt = self.toks[self.i + 1]
        if nxt == "=":
            return True
        if nxt != "[":
            return False
        depth, j = 0, self.i + 1
        while self.toks[j] != _EOF:
            depth += {"[": 1, "]": -1}.get(self.toks[j], 0)
            if depth == 0:
                return self.toks[j + 1] == "="
            j += 1
        return False

    def include(self, top: bool) -> None:
        start = self.i
        self.i += 1
        tok = self.tok
        if not tok.startswith('"'):
            raise self.fail('expected a file name in quotes, such as "qelib1.inc"')
        self.i += 1
        self.expect(";")
        if not top:
            raise self.fail("include belongs at the top of the circuit", start)
        if tok[1:-1] not in HEADERS:
            raise self.fail(f"include {tok} is not available: qnet provides only qelib1.inc (OpenQASM 2) and"
                            " stdgates.inc (OpenQASM 3); define other gates in the circuit", start)

    def declaration(self, top: bool) -> None:
        start = self.i
        word = self.tok
        self.i += 1
        quantum = word in ("qreg", "qubit")
        if word in ("qreg", "creg"):
            name = self.name("a register name")
            self.expect("[")
            size = self.size(word, name)
            self.expect("]")
        else:
            size = 1
            if self.accept("["):
                size = self.size(word, None)
                self.expect("]")
            name = self.name("a register name")
            if self.tok == "=":
                raise self.fail("bit registers cannot be initialised; they start at 0",
                                kind=errors.UnsupportedInstruction)
        self.expect(";")
        if not top:
            raise self.fail("registers are declared at the top level of the circuit", start)
        if name in self.qregs or name in self.cregs or name in self.consts or name in self.gates:
            raise self.fail(f"{name!r} is declared twice", start)
        if quantum:
            if self.physical:
                raise self.fail("a circuit uses either declared qubits or physical qubits ($n), not both", start)
            if self.num_qubits + size > limits.MAX_QUBITS:
                raise self.fail(f"the registers declare {self.num_qubits + size} qubits; qnet reads at most"
                                f" {limits.MAX_QUBITS} (its largest device has fewer)", start, errors.CircuitTooLarge)
            self.qregs[name] = (self.num_qubits, size)
            self.num_qubits += size
        else:
            if self.num_clbits + size > limits.MAX_CLBITS:
                raise self.fail(f"the registers declare {self.num_clbits + size} classical bits; qnet reads at"
                                f" most {limits.MAX_CLBITS}", start, errors.CircuitTooLarge)
            self.cregs[name] = (self.num_clbits, size)
            self.creg_order.append((name, self.num_clbits, size))
            self.num_clbits += size

    def size(self, word: str, name: str | None) -> int:
        at = self.i
        value = self.constant(self.expression())
        label = f"{word} {name}" if name else word
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(f"the size of {label} must be a positive integer, not {value!r}", at)
        return value

    def const(self, top: bool) -> None:
        start = self.i
        self.i += 1
        if not self.classical_type():
            raise self.fail(f"expected a type (int, uint, float, angle, bool) after const, found {self.tok!r}")
        name = self.name("a constant's name")
        self.expect("=")
        value = self.constant(self.expression())
        self.expect(";")
        if not top:
            raise self.fail("const declarations belong at the top level of the circuit", start)
        if name in self.consts or name in self.qregs or name in self.cregs or name in _CONSTANTS:
            raise self.fail(f"{name!r} is declared twice", start)
        self.consts[name] = value

    def classical_type(self) -> bool:
        """Skips `int`, `uint[32]`, `float[64]`, ... (qnet computes in Python numbers); False when none."""
        if self.tok not in _TYPES:
            return False
        self.i += 1
        if self.accept("["):
            self.constant(self.expression())
            self.expect("]")
        return True

    def constant(self, expr: Expr) -> float | int:
        if isinstance(expr, tuple):
            raise self.fail("this must be a constant expression (numbers, const names and pi)")
        return expr

    # --- gate definitions ---
    def gate_definition(self, top: bool) -> None:
        start = self.i
        opaque = self.tok == "opaque"
        self.i += 1
        name_at = self.i
        name = self.name("a gate name")
        params: list[str] = []
        if self.accept("(") and not self.accept(")"):
            params.append(self.name("a parameter name"))
            while self.accept(","):
                params.append(self.name("a parameter name"))
            self.expect(")")
        qubits: list[str] = []
        if _is_name(self.tok):
            qubits.append(self.name())
            while self.accept(","):
                qubits.append(self.name("a qubit argument"))
        if not top:
            raise self.fail("gates are defined at the top level of the circuit", start)
        if len(set(params)) != len(params) or len(set(qubits)) != len(qubits):
            raise self.fail(f"gate {name!r} names one argument twice", name_at)
        if opaque:
            self.expect(";")
            raise self.fail(f"opaque gate {name!r} has no definition qnet could run; define it with `gate`",
                            start, errors.UnsupportedInstruction)
        if name in self.gates:
            raise self.fail(f"gate {name!r} is defined twice", name_at)
        definition = GateDef(name, tuple(params), tuple(qubits), source=self.src.name)
        self.defining, self.scope = definition, set(params)
        body = self.block() if self.tok == "{" else self.expect("{")
        self.defining, self.scope = None, set()
        depth = 1 + max((c.target.depth for c in body if isinstance(c.target, GateDef)), default=0)
        definition.size, definition.steps = _lower_bounds(body)
        if depth > limits.MAX_GATE_DEPTH:
            raise self.fail(f"gate {name!r} nests definitions {depth} deep; qnet expands at most"
                            f" {limits.MAX_GATE_DEPTH} levels", name_at, errors.CircuitTooLarge)
        definition.body, definition.depth = body, depth
        self.gates[name] = definition

    # --- gate calls ---
    def gate_call(self) -> GateCall:
        start = self.i
        controls: list[bool] = []
        powers: list[Expr] = []  # outermost first, as written
        while self.tok in ("ctrl", "negctrl", "inv", "pow") and self.toks[self.i + 1] in ("@", "("):
            word = self.tok
            self.i += 1
            if word == "inv":
                powers.append(-1)
            elif word == "pow":
                self.expect("(")
                powers.append(self.expression())
                self.expect(")")
            else:
                count = 1
                if self.accept("("):
                    at = self.i
                    count = self.constant(self.expression())
                    if not isinstance(count, int) or count < 1:
                        raise self.fail(f"{word}(n) needs a positive integer n, not {count!r}", at)
                    self.expect(")")
                controls.extend([word == "ctrl"] * count)
                if len(controls) > limits.MAX_CONTROLS:
                    raise self.fail(f"more than {limits.MAX_CONTROLS} control qubits on one gate",
                                    kind=errors.CircuitTooLarge)
            self.expect("@")
        name_at = self.i
        name = self.name("a gate name")
        params: list[Expr] = []
        if self.accept("(") and not self.accept(")"):
            params.append(self.expression())
            while self.accept(","):
                params.append(self.expression())
            self.expect(")")
        operands = []
        if self.tok != ";":
            operands.append(self.operand(quantum=True))
            while self.accept(","):
                operands.append(self.operand(quantum=True))
        self.expect(";")
        target, n_params, n_qubits = self.resolve(name, name_at)
        if len(params) != n_params or len(operands) != n_qubits + len(controls):
            extra = f" plus {len(controls)} control qubits" if controls else ""
            raise self.fail(f"gate {name!r} takes {n_params} parameters and {n_qubits} qubits{extra}, got"
                            f" {len(params)} and {len(operands)}", name_at)
        if self.defining is not None:
            args = [o.k for o in operands]
            if len(set(args)) != len(args):
                raise self.fail(f"{name!r} is applied to the same qubit twice", name_at)
        return GateCall(start, target, tuple(params), tuple(operands), tuple(controls), tuple(reversed(powers)))

    def resolve(self, name: str, at: int) -> tuple[object, int, int]:
        """(target, parameters, qubits) of a gate name: the circuit's definitions first, then qnet's (inside a
        header, qnet's intrinsic gates first: their exact matrices, not the header's phase-free bodies)."""
        if name in self.gates and not (self.header and (name in gates.INTRINSIC or name in gates.ALIASES)):
            d = self.gates[name]
            return d, len(d.params), len(d.qubits)
        if name == "gphase":
            return "gphase", 1, 0
        canonical = gates.ALIASES.get(name, name)
        if canonical in gates.INTRINSIC:
            spec = gates.INTRINSIC[canonical]
            return canonical, spec.params, spec.qubits
        if name in gates.DERIVED:
            n_params, _, _ = gates.DERIVED[name]
            return ("derived", name), n_params, 1
        if name in MULTI_CONTROLLED:
            base, n = MULTI_CONTROLLED[name]
            return ("mc", base, n), 0, n + 1
        if name in self.library:
            d = self.library[name]
            return d, len(d.params), len(d.qubits)
        raise self.fail(f"unknown gate {name!r}: define it with `gate {name} ... {{ ... }}` or use a gate of"
                        " qelib1.inc or stdgates.inc", at)

    def operand(self, *, quantum: bool) -> Index | Arg:
        at = self.i
        tok = self.tok
        if quantum and tok.startswith("$"):
            self.i += 1
            if self.defining is not None:
                raise self.fail("a gate body uses its qubit arguments, not physical qubits", at)
            if self.qregs:
                raise self.fail("a circuit uses either declared qubits or physical qubits ($n), not both", at)
            n = int(tok[1:])
            if n >= limits.MAX_QUBITS:
                raise self.fail(f"physical qubit {tok} is beyond qnet's {limits.MAX_QUBITS}", at,
                                errors.CircuitTooLarge)
            self.physical = True
            self.num_qubits = max(self.num_qubits, n + 1)
            return Index(n, 1, None, at)
        name = self.name("a register name" if self.defining is None else "a qubit argument")
        if self.defining is not None and quantum:
            if name not in self.defining.qubits:
                raise self.fail(f"{name!r} is not a qubit argument of gate {self.defining.name!r}", at)
            return Arg(self.defining.qubits.index(name))
        registers = self.qregs if quantum else self.cregs
        if name not in registers:
            kind = "quantum" if quantum else "classical"
            raise self.fail(f"unknown {kind} register {name!r}", at)
        start, size = registers[name]
        select: object = None
        if self.accept("["):
            select = self.set_of_values() if self.accept("{") else self.index_or_range()
            self.expect("]")
        return Index(start, size, select, at)

    def set_of_values(self) -> tuple:
        """`{a, b, ...}`, after its '{'."""
        items = [self.expression()]
        while self.accept(","):
            items.append(self.expression())
        self.expect("}")
        return ("set", tuple(items))

    def index_or_range(self) -> object:
        """`a`, `a:b` or `a:step:b` (ranges include both ends)."""
        first = self.expression()
        if not self.accept(":"):
            return first
        second = self.expression()
        if self.accept(":"):
            return ("range", first, self.expression(), second)
        return ("range", first, second, 1)

    # --- control flow ---
    def conditional(self) -> If:
        start = self.i
        self.i += 1
        self.expect("(")
        negated = self.accept("!")
        at = self.i
        bits = self.operand(quantum=False)
        if isinstance(bits.select, tuple) and bits.select and bits.select[0] in ("range", "set"):
            raise self.fail("compare a whole classical register or one bit", at, errors.UnsupportedInstruction)
        # `if (c[0])` is c[0] == 1; `if (c)` is c != 0; `!` negates either.
        value: Expr = 1 if bits.select is not None else 0
        equal = bits.select is not None
        if negated:
            equal = not equal
        elif self.tok in ("==", "!="):
            equal = self.tok == "=="
            self.i += 1
            value = self.expression()
        self.expect(")")
        then = self.block()
        orelse: tuple = ()
        if self.tok == "else":
            self.i += 1
            orelse = self.block()
        return If(start, bits, value, equal, then, orelse)

    def loop(self) -> For:
        start = self.i
        self.i += 1
        self.classical_type()  # optional here
        var = self.name("a loop variable")
        self.expect("in")
        at = self.i
        values: object = None
        if self.accept("["):
            values = self.index_or_range()
            self.expect("]")
        elif self.accept("{"):
            values = self.set_of_values()
        if not (isinstance(values, tuple) and values and values[0] in ("range", "set")):
            raise self.fail("a for loop runs over a range [a:b], [a:step:b] or a set {a, b, c}", at)
        outer = self.scope
        self.scope = outer | {var}
        body = self.block()
        self.scope = outer
        return For(start, var, values, body)

    # --- expressions ---
    def expression(self) -> Expr:
        self._expr_depth = 0
        value, _ = self._binary(1)
        return value

    def _binary(self, min_prec: int) -> tuple[Expr, int]:
        table = _PRECEDENCE_3 if self.version.startswith("3") else _PRECEDENCE_2
        left, depth = self._unary()
        while True:
            op = self.tok
            prec = table.get(op)
            if prec is None or prec < min_prec:
                return left, depth
            at = self.i
            self.i += 1
            right, rdepth = self._binary(prec + 1)
            depth = 1 + max(depth, rdepth)
            self._check_depth(depth, at)
            left = self._fold(op, left, right, at)

    def _unary(self) -> tuple[Expr, int]:
        op = self.tok
        if op in ("-", "+", "!", "~"):
            at = self.i
            self.i += 1
            self._nest(at)
            value, depth = self._unary()
            self._expr_depth -= 1
            if op == "+":
                return value, depth
            self._check_depth(depth + 1, at)
            if isinstance(value, tuple):
                return ("un", op, value, at), depth + 1
            return evaluate_unary(op, value, self, at), 0
        return self._power()

    def _power(self) -> tuple[Expr, int]:
        base, depth = self._atom()
        op = self.tok
        if op == "**" or (op == "^" and not self.version.startswith("3")):
            at = self.i
            self.i += 1
            self._nest(at)
            exponent, edepth = self._unary()
            self._expr_depth -= 1
            depth = 1 + max(depth, edepth)
            self._check_depth(depth, at)
            return self._fold("**", base, exponent, at), depth
        return base, depth

    def _atom(self) -> tuple[Expr, int]:
        at = self.i
        tok = self.tok
        if _is_number(tok):
            self.i += 1
            return parse_number(tok, self, at), 0
        if tok == "(":
            self.i += 1
            self._nest(at)
            value, depth = self._binary(1)
            self._expr_depth -= 1
            self.expect(")")
            return value, depth
        if _is_name(tok):
            self.i += 1
            if tok in self.scope:
                return ("var", tok, at), 0
            if tok in self.consts:
                return self.consts[tok], 0
            if tok in _CONSTANTS:
                return _CONSTANTS[tok], 0
            if tok in _FUNCTIONS or tok in ("int", "float"):
                self.expect("(")
                self._nest(at)
                value, depth = self._binary(1)
                self._expr_depth -= 1
                self.expect(")")
                self._check_depth(depth + 1, at)
                if isinstance(value, tuple):
                    return ("call", tok, value, at), depth + 1
                return evaluate_call(tok, value, self, at), 0
            raise self.fail(f"unknown name {tok!r} in an expression", at)
        found = repr(tok) if tok else "the end of the circuit"
        raise self.fail(f"expected a number, a name or '(' in an expression, found {found}", at)

    def _nest(self, at: int) -> None:
        self._expr_depth += 1
        self._check_depth(self._expr_depth, at)

    def _check_depth(self, depth: int, at: int) -> None:
        if depth > limits.MAX_EXPRESSION_DEPTH:
            raise self.fail(f"the expression nests more than {limits.MAX_EXPRESSION_DEPTH} levels",
                            at, errors.CircuitTooLarge)

    def _fold(self, op: str, left: Expr, right: Expr, at: int | None = None) -> Expr:
        at = self.i if at is None else at
        if isinstance(left, tuple) or isinstance(right, tuple):
            return ("bin", op, left, right, at)
        return evaluate_binary(op, left, right, self, at)

    # used by the evaluator for errors
    def error_at(self, message: str, at: int) -> errors.InvalidArgument:
        return self.fail(message, at)


def _lower_bounds(body: tuple) -> tuple[int, int]:
    """(operations, steps) a call of a gate with this body takes at least."""
    size = steps = 0
    for call in body:
        repeats = 1
        for power in call.exponent:
            if isinstance(power, tuple):
                repeats = 0  # a power that depends on a parameter may be 0
            elif isinstance(power, int) or float(power).is_integer():
                repeats *= abs(int(power))
        target = call.target
        if isinstance(target, GateDef):
            size += target.size * repeats
            steps += (1 + target.steps) * repeats
        else:
            size += 0 if target == "gphase" else min(repeats, 1)
            steps += 1
    return size, steps


# --- evaluation (shared by folding here and by the expander) ------------------------------------------------


class _Locator(Protocol):
    """Anything with `error_at(message, index)`: the parser while folding, the expander while expanding."""

    def error_at(self, message: str, at: int) -> errors.InvalidArgument: ...


def _checked(value: object, where: _Locator, at: int) -> float | int:
    if isinstance(value, complex):
        raise where.error_at("the expression has no real value", at)
    if isinstance(value, float) and not math.isfinite(value):
        raise where.error_at("the expression is not a finite number", at)
    if isinstance(value, int) and not -_INT_BOUND <= value < _INT_BOUND:
        raise where.error_at("an integer in the expression is out of the 64-bit range", at)
    return value  # type: ignore[return-value]


def parse_number(tok: str, where: _Locator, at: int) -> float | int:
    text = tok.replace("_", "")
    try:
        if text[:2].lower() in ("0x", "0b", "0o"):
            value: float | int = int(text, 0)
        elif any(c in text for c in ".eE"):
            value = float(text)
        else:
            value = int(text) if len(text) <= 20 else float(text)
    except ValueError:
        raise where.error_at(f"{tok!r} is not a number", at) from None
    return _checked(value, where, at)


def evaluate_unary(op: str, value: float | int, where: _Locator, at: int) -> float | int:
    if op == "-":
        return _checked(-value, where, at)
    if op == "!":
        return int(not value)
    if not isinstance(value, int):
        raise where.error_at("~ needs an integer", at)
    return ~value


def evaluate_binary(op: str, a: float | int, b: float | int, where: _Locator, at: int) -> float | int:
    try:
        if op == "+":
            r: object = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            if b == 0:
                raise where.error_at("division by zero", at)
            r = a / b
            if isinstance(a, int) and isinstance(b, int) and r == int(r):
                r = int(r)
        elif op == "%":
            if b == 0:
                raise where.error_at("modulo by zero", at)
            r = a % b
        elif op == "**":
            if a == 0 and b < 0:
                raise where.error_at("zero to a negative power", at)
            if isinstance(a, int) and isinstance(b, int) and b >= 0:
                if abs(a) > 1 and b > 63:
                    raise where.error_at("an integer power is out of the 64-bit range", at)
                r = a**b
            else:
                r = float(a) ** float(b)
        elif op in ("==", "!="):
            r = int((a == b) == (op == "=="))
        elif op in ("<", ">", "<=", ">="):
            r = int({"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op])
        elif op == "&&":
            r = int(bool(a) and bool(b))
        elif op == "||":
            r = int(bool(a) or bool(b))
        else:
            if not isinstance(a, int) or not isinstance(b, int):
                raise where.error_at(f"{op!r} needs integers", at)
            if op in ("<<", ">>") and not 0 <= b < 64:
                raise where.error_at("a shift must be between 0 and 63 bits", at)
            if op == "&":
                r = a & b
            elif op == "|":
                r = a | b
            elif op == "^":
                r = a ^ b
            else:
                r = a << b if op == "<<" else a >> b
    except (OverflowError, ZeroDivisionError, ValueError):
        raise where.error_at("the expression is not a finite number", at) from None
    return _checked(r, where, at)


def evaluate_call(name: str, value: float | int, where: _Locator, at: int) -> float | int:
    if name == "int":
        if not math.isfinite(value):
            raise where.error_at("int() of a value that is not finite", at)
        return _checked(int(value), where, at)
    if name == "float":
        return float(value)
    try:
        result = _FUNCTIONS[name](value)
    except (ValueError, OverflowError):
        raise where.error_at(f"{name}({value}) is undefined or too large", at) from None
    return _checked(result, where, at)


# --- the standard headers ----------------------------------------------------------------------------------

_HEADER_DIR = Path(__file__).with_name("headers")


def load_library() -> dict[str, GateDef]:
    library: dict[str, GateDef] = {}
    for header in HEADERS:
        source = Source((_HEADER_DIR / header).read_text(encoding="utf-8"), header)
        parser = Parser(source, library=library)
        parser.version = "3.0" if header == "stdgates.inc" else "2.0"
        parser.header = True
        parser.parse()
        for name, definition in parser.gates.items():
            if name not in gates.INTRINSIC and name not in gates.ALIASES and name not in MULTI_CONTROLLED \
                    and name not in gates.DERIVED:
                library.setdefault(name, definition)
    return library
