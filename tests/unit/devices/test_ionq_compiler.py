"""The IonQ compiler: its GPI/GPI2/MS circuit, with the phases it emits, is the input circuit up to global phase."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import qasm2
from qiskit.quantum_info import Operator

from services.backends.domain.compile import ionq_compile
from services.backends.domain.qasm import parse

# IonQ's native gates, written here from IonQ's documentation, independently of the code under test.
_X = np.array([[0, 1], [1, 0]], dtype=complex)
_Y = np.array([[0, -1j], [1j, 0]])


def _sigma(phi: float) -> np.ndarray:
    return math.cos(phi) * _X + math.sin(phi) * _Y


def _gpi(phi: float) -> np.ndarray:
    return np.array([[0, np.exp(-1j * phi)], [np.exp(1j * phi), 0]])


def _gpi2(phi: float) -> np.ndarray:
    return np.array([[1, -1j * np.exp(-1j * phi)], [-1j * np.exp(1j * phi), 1]]) / math.sqrt(2)


def _embed(matrix: np.ndarray, qubit: int, n: int) -> np.ndarray:
    """A one-qubit matrix on `qubit` of n, Qiskit's order (qubit 0 the least significant bit)."""
    full = np.eye(1, dtype=complex)
    for q in reversed(range(n)):
        full = np.kron(full, matrix if q == qubit else np.eye(2))
    return full


def _ms(phi0: float, phi1: float, a: int, b: int, n: int) -> np.ndarray:
    # MS(phi0, phi1) = exp(-i pi/4 sigma(phi0) (x) sigma(phi1)) = (I - i sigma sigma) / sqrt(2)
    product = _embed(_sigma(phi0), a, n) @ _embed(_sigma(phi1), b, n)
    return (np.eye(2**n) - 1j * product) / math.sqrt(2)


def _native_unitary(ops, n: int) -> np.ndarray:
    u = np.eye(2**n, dtype=complex)
    for op in ops:
        if op.name == "gpi":
            g = _embed(_gpi(op.params[0]), op.qubits[0], n)
        elif op.name == "gpi2":
            g = _embed(_gpi2(op.params[0]), op.qubits[0], n)
        elif op.name == "ms":
            g = _ms(*op.params, *op.qubits, n)
        else:
            raise AssertionError(f"not an IonQ native: {op.name}")
        u = g @ u
    return u


def _rz(theta: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * theta), np.exp(0.5j * theta)])


def _overlap(u: np.ndarray, v: np.ndarray) -> float:
    return abs(np.trace(u.conj().T @ v)) / u.shape[0]


ONE_Q = {"h": 0, "x": 0, "y": 0, "z": 0, "s": 0, "sdg": 0, "t": 0, "tdg": 0, "sx": 0, "sxdg": 0, "id": 0,
         "rx": 1, "ry": 1, "rz": 1, "p": 1, "u": 3, "u2": 2}
TWO_Q = {"cx": 0, "cy": 0, "cz": 0, "ch": 0, "swap": 0, "csx": 0, "crx": 1, "cry": 1, "crz": 1, "cp": 1,
         "rzz": 1, "rxx": 1, "cu": 4}
THREE_Q = {"ccx": 0, "cswap": 0}
GATES = {**ONE_Q, **TWO_Q, **THREE_Q}


def _arity(name: str) -> int:
    return 1 if name in ONE_Q else 2 if name in TWO_Q else 3


def _qasm(n: int, gates: list[tuple[str, tuple[int, ...], tuple[float, ...]]]) -> str:
    lines = ['OPENQASM 2.0;', 'include "qelib1.inc";', f"qreg q[{n}];"]
    for name, qubits, params in gates:
        args = f"({','.join(repr(p) for p in params)})" if params else ""
        lines.append(f"{name}{args} {','.join(f'q[{q}]' for q in qubits)};")
    return "\n".join(lines) + "\n"


def _random_circuit(rng: np.random.Generator, n: int, length: int) -> str:
    names = [g for g in GATES if _arity(g) <= n]
    gates = []
    for _ in range(length):
        name = names[rng.integers(len(names))]
        qubits = tuple(int(q) for q in rng.permutation(n)[: _arity(name)])
        gates.append((name, qubits, tuple(float(x) for x in rng.uniform(-2 * math.pi, 2 * math.pi, GATES[name]))))
    return _qasm(n, gates)


def _assert_compiles_exactly(qasm: str) -> None:
    circuit = parse(qasm)
    n = circuit.num_qubits
    compiled = ionq_compile(circuit.ops)
    expected = Operator(qasm2.loads(qasm, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)).data
    natives = _native_unitary(compiled.ops, n)
    frame = np.eye(2**n, dtype=complex)
    for q, angle in compiled.frame.items():
        frame = _embed(_rz(angle), q, n) @ frame
    assert _overlap(expected, frame @ natives) > 1 - 1e-9, qasm
    # What the device runs, the ops without the final virtual Z rotations, measures the same distribution.
    start = np.zeros(2**n)
    start[0] = 1
    assert np.allclose(np.abs(natives @ start) ** 2, np.abs(expected @ start) ** 2, atol=1e-9), qasm


@pytest.mark.parametrize("seed", range(60))
def test_random_circuits_compile_to_the_same_unitary(seed):
    rng = np.random.default_rng(seed)
    _assert_compiles_exactly(_random_circuit(rng, 1 + seed % 4, int(rng.integers(1, 25))))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.lists(st.tuples(st.sampled_from(sorted(GATES)), st.randoms(use_true_random=False)),
                                  min_size=1, max_size=15))
def test_property_every_circuit_of_standard_gates_compiles_to_its_unitary(n, picks):
    gates = []
    for name, rnd in picks:
        if _arity(name) > n:
            continue
        qubits = tuple(rnd.sample(range(n), _arity(name)))
        gates.append((name, qubits, tuple(rnd.uniform(-7, 7) for _ in range(GATES[name]))))
    _assert_compiles_exactly(_qasm(n, gates))


@pytest.mark.parametrize("qasm", [
    "h q[0];", "x q[0];", "y q[0];", "sx q[0];", "rz(0.3) q[0];", "s q[0]; h q[0]; t q[0];",
    "cx q[0],q[1];", "cx q[1],q[0];", "cz q[0],q[1];", "h q[0]; cx q[0],q[1]; rz(0.7) q[1]; cx q[1],q[0];",
])
def test_special_cases_compile_exactly(qasm):
    _assert_compiles_exactly(f'OPENQASM 2.0; include "qelib1.inc"; qreg q[2];\n{qasm}\n')


def test_the_compiled_circuit_uses_only_gpi_gpi2_ms_and_measurements():
    rng = np.random.default_rng(99)
    text = _random_circuit(rng, 4, 40) + "creg c[4];\nmeasure q -> c;\n"
    ops = ionq_compile(parse(text).ops).ops
    assert {op.name for op in ops} <= {"gpi", "gpi2", "ms", "measure"}
    assert sum(op.name == "measure" for op in ops) == 4


def test_one_cx_is_exactly_one_ms():
    ops = ionq_compile(parse('OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; cx q[0],q[1];').ops).ops
    assert [op.name for op in ops].count("ms") == 1
    assert [op.qubits for op in ops if op.name == "ms"] == [(0, 1)]


def test_a_one_qubit_run_takes_at_most_two_pulses_and_a_z_rotation_none():
    run = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; h q[0]; t q[0]; rx(0.4) q[0]; u(1,2,3) q[0];'
    assert len(ionq_compile(parse(run).ops).ops) <= 2
    z = ionq_compile(parse('OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; rz(0.4) q[0]; t q[0];').ops)
    assert z.ops == () and z.frame == {0: pytest.approx(0.4 + math.pi / 4)}


def test_phases_follow_the_virtual_z_frame():
    # s then x: the X pulse after a virtual S runs with its phase shifted by -pi/2.
    ops = ionq_compile(parse('OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; s q[0]; x q[0];').ops).ops
    assert [op.name for op in ops] == ["gpi"]
    assert ops[0].params[0] != pytest.approx(0.0)
