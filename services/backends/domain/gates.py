"""The gates of qnet's neutral circuit: exact matrices (Qiskit's conventions, global phase included), inverses,
powers, and how a gate under `ctrl @` becomes intrinsic gates.

Pure Python + numpy. The OpenQASM front door (`domain/qasm/`) emits only the gates of INTRINSIC; every adapter
maps those names to its SDK, and `compile.to_basis` decomposes them for the devices compiled here.
"""

from __future__ import annotations

import cmath
import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

_SQ2 = 1 / math.sqrt(2)


def _rx(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -1j * s], [-1j * s, c]])


def _ry(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -s], [s, c]], dtype=complex)


def _rz(t: float) -> np.ndarray:
    return np.array([[cmath.exp(-0.5j * t), 0], [0, cmath.exp(0.5j * t)]])


def _p(t: float) -> np.ndarray:
    return np.array([[1, 0], [0, cmath.exp(1j * t)]])


def u_matrix(theta: float, phi: float, lam: float) -> np.ndarray:
    """OpenQASM's U(θ, φ, λ) (the same matrix in Qiskit and OpenQASM 3)."""
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array([[c, -cmath.exp(1j * lam) * s], [cmath.exp(1j * phi) * s, cmath.exp(1j * (phi + lam)) * c]])


_FIXED_1Q: dict[str, np.ndarray] = {
    "id": np.eye(2, dtype=complex),
    "x": np.array([[0, 1], [1, 0]], dtype=complex),
    "y": np.array([[0, -1j], [1j, 0]]),
    "z": np.diag([1, -1]).astype(complex),
    "h": np.array([[_SQ2, _SQ2], [_SQ2, -_SQ2]], dtype=complex),
    "s": np.diag([1, 1j]),
    "sdg": np.diag([1, -1j]),
    "t": np.diag([1, cmath.exp(0.25j * math.pi)]),
    "tdg": np.diag([1, cmath.exp(-0.25j * math.pi)]),
    "sx": np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]]) / 2,
    "sxdg": np.array([[1 - 1j, 1 + 1j], [1 + 1j, 1 - 1j]]) / 2,
}
_PARAMETRIC_1Q: dict[str, Callable[..., np.ndarray]] = {"rx": _rx, "ry": _ry, "rz": _rz, "p": _p, "u": u_matrix}


class Intrinsic(NamedTuple):
    """A gate every adapter knows by name. `base` is set for controlled one-qubit gates (cx: base x, 1 control)."""

    params: int
    qubits: int
    base: str | None = None
    controls: int = 0


INTRINSIC: dict[str, Intrinsic] = {
    **{name: Intrinsic(0, 1) for name in _FIXED_1Q},
    "rx": Intrinsic(1, 1), "ry": Intrinsic(1, 1), "rz": Intrinsic(1, 1), "p": Intrinsic(1, 1), "u": Intrinsic(3, 1),
    "cx": Intrinsic(0, 2, "x", 1), "cy": Intrinsic(0, 2, "y", 1), "cz": Intrinsic(0, 2, "z", 1),
    "ch": Intrinsic(0, 2, "h", 1), "csx": Intrinsic(0, 2, "sx", 1), "crx": Intrinsic(1, 2, "rx", 1),
    "cry": Intrinsic(1, 2, "ry", 1), "crz": Intrinsic(1, 2, "rz", 1), "cp": Intrinsic(1, 2, "p", 1),
    # cu(θ, φ, λ, γ): controlled e^{iγ} U(θ, φ, λ) (Qiskit's CUGate).
    "cu": Intrinsic(4, 2, "u", 1),
    "ccx": Intrinsic(0, 3, "x", 2),
    "swap": Intrinsic(0, 2), "rzz": Intrinsic(1, 2), "rxx": Intrinsic(1, 2), "cswap": Intrinsic(0, 3, "swap", 1),
}
#: Names the standard headers use for intrinsic gates (OpenQASM 2's qelib1.inc and 3's stdgates.inc).
ALIASES = {"U": "u", "u3": "u", "u1": "p", "phase": "p", "CX": "cx", "cnot": "cx", "cu1": "cp", "cphase": "cp",
           "toffoli": "ccx", "fredkin": "cswap", "i": "id"}
#: Header gates that are an intrinsic gate with other parameters: name -> (parameters, intrinsic, mapping).
DERIVED: dict[str, tuple[int, str, Callable[..., tuple[float, ...]]]] = {
    "u2": (2, "u", lambda phi, lam: (math.pi / 2, phi, lam)),
    "u0": (1, "id", lambda _gamma: ()),
}
#: One-qubit gates whose inverse is another named gate; rotations invert by negating the angle.
_INVERSE_NAME = {"s": "sdg", "sdg": "s", "t": "tdg", "tdg": "t", "sx": "sxdg", "sxdg": "sx",
                 "id": "id", "x": "x", "y": "y", "z": "z", "h": "h"}
ROTATIONS = frozenset({"rx", "ry", "rz", "p", "rzz", "rxx"})
#: Controlled forms with a name of their own: (base, number of controls) -> name.
_CONTROLLED_NAME = {(spec.base, spec.controls): name for name, spec in INTRINSIC.items() if spec.base and name != "cu"}
#: Exact decompositions of the two-qubit gates that are not controlled one-qubit gates (qubits a=0, b=1).
COMPOSITE: dict[str, Callable[[float], list[tuple[str, tuple[float, ...], tuple[int, ...]]]]] = {
    "swap": lambda _: [("cx", (), (0, 1)), ("cx", (), (1, 0)), ("cx", (), (0, 1))],
    "rzz": lambda t: [("cx", (), (0, 1)), ("rz", (t,), (1,)), ("cx", (), (0, 1))],
    "rxx": lambda t: [("h", (), (0,)), ("h", (), (1,)), ("cx", (), (0, 1)), ("rz", (t,), (1,)), ("cx", (), (0, 1)),
                      ("h", (), (0,)), ("h", (), (1,))],
}


def one_qubit_matrix(name: str, params: Sequence[float] = ()) -> np.ndarray:
    if name in _FIXED_1Q:
        return _FIXED_1Q[name]
    return _PARAMETRIC_1Q[name](*params)


def controlled_name(base: str, controls: int) -> str | None:
    return _CONTROLLED_NAME.get((base, controls))


def inverse_1q(name: str, params: Sequence[float]) -> tuple[str, tuple[float, ...]]:
    """The named inverse of a one-qubit intrinsic."""
    if name in _INVERSE_NAME:
        return _INVERSE_NAME[name], ()
    if name == "u":
        theta, phi, lam = params
        return "u", (-theta, -lam, -phi)
    return name, (-params[0],)


def matrix_power(matrix: np.ndarray, exponent: float) -> np.ndarray:
    """The principal power of a unitary (eigenphases in (-π, π], scaled); cached, as loops repeat them."""
    return _power_of(_key(matrix), float(exponent))


def _key(matrix: np.ndarray) -> bytes:
    return np.ascontiguousarray(matrix, dtype=complex).tobytes()


@functools.lru_cache(maxsize=1024)
def _power_of(key: bytes, exponent: float) -> np.ndarray:
    matrix = np.frombuffer(key, dtype=complex).reshape(2, 2)
    values, vectors = np.linalg.eig(matrix)
    # A unitary is normal: orthonormalise the eigenvectors so that the result stays unitary.
    vectors, _ = np.linalg.qr(vectors)
    phases = np.angle(np.diag(vectors.conj().T @ matrix @ vectors))
    result = vectors @ np.diag(np.exp(1j * exponent * phases)) @ vectors.conj().T
    result.setflags(write=False)
    return result


def matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    return matrix_power(matrix, 0.5)


def cu_params(matrix: np.ndarray) -> tuple[float, float, float, float]:
    """(θ, φ, λ, γ) with matrix = e^{iγ} U(θ, φ, λ), exactly."""
    return _cu_params_of(_key(matrix))


@functools.lru_cache(maxsize=1024)
def _cu_params_of(key: bytes) -> tuple[float, float, float, float]:
    matrix = np.frombuffer(key, dtype=complex).reshape(2, 2)
    m00, m01, m10, m11 = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    theta = 2 * math.atan2(abs(m10), abs(m00))
    if abs(m00) > 1e-12:
        gamma = cmath.phase(m00)
        if abs(m10) > 1e-12:
            phi = cmath.phase(m10) - gamma
            lam = cmath.phase(-m01) - gamma
        else:
            phi, lam = 0.0, cmath.phase(m11) - gamma
    else:
        gamma, phi, lam = 0.0, cmath.phase(m10), cmath.phase(-m01)
    return theta, phi, lam, gamma


def zyz_angles(u: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) with u = e^{ig} RZ(a) RY(b) RZ(c)."""
    det = np.linalg.det(u)
    su = u / cmath.sqrt(det)
    b = 2 * math.atan2(abs(su[1, 0]), abs(su[0, 0]))
    plus = cmath.phase(su[1, 1]) if abs(su[1, 1]) > 1e-12 else 0.0
    minus = cmath.phase(su[1, 0]) if abs(su[1, 0]) > 1e-12 else 0.0
    return plus + minus, b, plus - minus
