"""Compiling a neutral circuit for a device: basis decomposition, routing on a coupling map, native gates.

Pure Python + numpy. The IBM adapter compiles with Qiskit's own transpiler instead; this module serves the
devices whose SDK has no local compiler here (pyQuil's quilc is a separate server; IonQ compiles in its
cloud), so that they too report a compiled depth and two-qubit gate count, and simulate what they would run.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from services.backends.domain.circuit import Circuit, Op
from services.backends.domain.gates import one_qubit_matrix, zyz_angles

_I = np.eye(2, dtype=complex)

#: A SWAP the router inserted, in logical terms: it moves states between physical qubits, so a simulation on
#: logical qubits only relabels them; it costs the noise of three two-qubit gates on the qubits it moves.
ROUTE_SWAP = "route_swap"

#: Entry-wise tolerance for "this 2x2 unitary is the identity up to phase". A merged run of one-qubit gates
#: carries float error of about 1e-15 per gate, so a true identity lands far inside 1e-9; a run within 1e-9 of
#: the identity changes no probability by more than ~1e-9, which no number of shots a device allows can see.
IDENTITY_TOLERANCE = 1e-9

#: Radians within which a rotation angle counts as a special value (0, pi/2, pi): a zero rotation is dropped,
#: pi/2 and pi take one pulse instead of two. zyz_angles recovers angles to ~1e-15 rad, so true special values
#: land far inside; treating an angle 1e-9 rad away as the special value moves the unitary by 1e-9 / 2 in
#: operator norm and a probability by at most ~1e-9, which no number of shots a device allows can see.
ANGLE_TOLERANCE = 1e-9


def to_basis(ops: Iterable[Op]) -> list[Op]:
    """Decomposes every gate into one-qubit gates plus cx and cz (measure, reset, barrier-free)."""
    out: list[Op] = []
    for op in ops:
        name, q, p = op.name, op.qubits, op.params
        if len(q) == 1 and name != ROUTE_SWAP or name in ("cx", "cz", "measure", "reset", ROUTE_SWAP):
            out.append(op)
            continue
        seq: list[tuple[str, tuple[int, ...], tuple[float, ...]]]
        if name == "cy":
            seq = [("sdg", (q[1],), ()), ("cx", q, ()), ("s", (q[1],), ())]
        elif name == "ch":
            seq = [("s", (q[1],), ()), ("h", (q[1],), ()), ("t", (q[1],), ()), ("cx", q, ()),
                   ("tdg", (q[1],), ()), ("h", (q[1],), ()), ("sdg", (q[1],), ())]
        elif name == "swap":
            seq = [("cx", q, ()), ("cx", (q[1], q[0]), ()), ("cx", q, ())]
        elif name == "crz":
            seq = [("rz", (q[1],), (p[0] / 2,)), ("cx", q, ()), ("rz", (q[1],), (-p[0] / 2,)), ("cx", q, ())]
        elif name == "cry":
            seq = [("ry", (q[1],), (p[0] / 2,)), ("cx", q, ()), ("ry", (q[1],), (-p[0] / 2,)), ("cx", q, ())]
        elif name == "crx":
            seq = [("h", (q[1],), ()), ("rz", (q[1],), (p[0] / 2,)), ("cx", q, ()), ("rz", (q[1],), (-p[0] / 2,)),
                   ("cx", q, ()), ("h", (q[1],), ())]
        elif name == "csx":  # sx = H S H
            seq = [("h", (q[1],), ()), ("p", (q[0],), (math.pi / 4,)), ("cx", q, ()), ("p", (q[1],), (-math.pi / 4,)),
                   ("cx", q, ()), ("p", (q[1],), (math.pi / 4,)), ("h", (q[1],), ())]
        elif name == "cu":  # controlled e^{iγ} U(θ, φ, λ)
            theta, phi, lam, gamma = p
            seq = [("p", (q[0],), (gamma + (lam + phi) / 2,)), ("p", (q[1],), ((lam - phi) / 2,)), ("cx", q, ()),
                   ("u", (q[1],), (-theta / 2, 0.0, -(phi + lam) / 2)), ("cx", q, ()),
                   ("u", (q[1],), (theta / 2, phi, 0.0))]
        elif name == "cp":
            seq = [("p", (q[0],), (p[0] / 2,)), ("cx", q, ()), ("p", (q[1],), (-p[0] / 2,)), ("cx", q, ()),
                   ("p", (q[1],), (p[0] / 2,))]
        elif name == "rzz":
            seq = [("cx", q, ()), ("rz", (q[1],), (p[0],)), ("cx", q, ())]
        elif name == "rxx":
            seq = [("h", (q[0],), ()), ("h", (q[1],), ()), ("cx", q, ()), ("rz", (q[1],), (p[0],)), ("cx", q, ()),
                   ("h", (q[0],), ()), ("h", (q[1],), ())]
        elif name == "ccx":
            a, b, c = q
            seq = [("h", (c,), ()), ("cx", (b, c), ()), ("tdg", (c,), ()), ("cx", (a, c), ()), ("t", (c,), ()),
                   ("cx", (b, c), ()), ("tdg", (c,), ()), ("cx", (a, c), ()), ("t", (b,), ()), ("t", (c,), ()),
                   ("h", (c,), ()), ("cx", (a, b), ()), ("t", (a,), ()), ("tdg", (b,), ()), ("cx", (a, b), ())]
        elif name == "cswap":
            a, b, c = q
            out.append(Op("cx", (c, b), condition=op.condition))
            out.extend(to_basis([Op("ccx", (a, b, c), condition=op.condition)]))
            out.append(Op("cx", (c, b), condition=op.condition))
            continue
        else:
            raise ValueError(f"no decomposition for {name}")
        out.extend(Op(n, qs, ps, condition=op.condition) for n, qs, ps in seq)
    return out



def route(ops: Sequence[Op], num_qubits: int, coupling: Sequence[tuple[int, int]] | None,
          device_qubits: int, preferred: Sequence[int] = (), fixed: Sequence[int] | None = None,
          ) -> tuple[list[Op], dict[int, int], list[Op]]:
    """Places logical qubits on a connected set of physical qubits and inserts SWAPs for distant pairs.

    Returns the ops on physical qubits, the final logical -> physical layout (measurements follow it), and the
    same ops on logical qubits with each inserted SWAP as a ROUTE_SWAP marker on the logical qubits it moved.
    With `coupling` None (all-to-all) the layout is the identity; `fixed` gives the initial layout (logical
    qubit i on physical qubit fixed[i]), as for a circuit written on physical qubits.
    """
    if coupling is None:
        return list(ops), {q: q for q in range(num_qubits)}, list(ops)
    neighbours: dict[int, set[int]] = {q: set() for q in range(device_qubits)}
    for a, b in coupling:
        neighbours[a].add(b)
        neighbours[b].add(a)
    layout = dict(enumerate(fixed)) if fixed is not None else _initial_layout(ops, num_qubits, neighbours, preferred)
    where = {physical: logical for logical, physical in layout.items()}
    out: list[Op] = []
    logical_ops: list[Op] = []
    for op in ops:
        if len(op.qubits) == 2:
            a, b = (layout[q] for q in op.qubits)
            if b not in neighbours[a]:
                path = _shortest_path(neighbours, a, b)
                for hop in path[1:-1]:  # move the first qubit next to the second
                    out.append(Op("swap", (a, hop)))
                    la, lh = where.get(a), where.get(hop)
                    logical_ops.append(Op(ROUTE_SWAP, tuple(q for q in (la, lh) if q is not None)))
                    if la is not None:
                        layout[la] = hop
                    if lh is not None:
                        layout[lh] = a
                    where[a], where[hop] = lh, la
                    a = hop
        out.append(Op(op.name, tuple(layout[q] for q in op.qubits), op.params, op.clbits, op.condition))
        logical_ops.append(op)
    return out, layout, logical_ops


def _initial_layout(ops: Sequence[Op], num_qubits: int, neighbours: dict[int, set[int]],
                    preferred: Sequence[int]) -> dict[int, int]:
    """Greedy placement by interaction: each qubit goes next to the qubit it first interacts with."""
    rank = {q: i for i, q in enumerate(preferred)}
    free = set(neighbours)
    layout: dict[int, int] = {}

    def nearest_free(origin: int | None) -> int:
        if origin is None:
            candidates = [q for q in free if any(n in free for n in neighbours[q])] or list(free)
            return min(candidates, key=lambda q: (rank.get(q, len(rank)), -len(neighbours[q])))
        seen, queue = {origin}, deque([origin])
        while queue:
            q = queue.popleft()
            for n in sorted(neighbours[q], key=lambda x: rank.get(x, len(rank))):
                if n in free:
                    return n
                if n not in seen:
                    seen.add(n)
                    queue.append(n)
        return min(free)

    def place(logical: int, origin: int | None) -> None:
        physical = nearest_free(origin)
        layout[logical] = physical
        free.discard(physical)

    for op in ops:
        if len(op.qubits) != 2:
            continue
        a, b = op.qubits
        if a not in layout and b not in layout:
            place(a, None)
        if a not in layout:
            place(a, layout[b])
        if b not in layout:
            place(b, layout[a])
    for logical in range(num_qubits):
        if logical not in layout:
            place(logical, next(iter(layout.values()), None))
    return layout


def _shortest_path(neighbours: dict[int, set[int]], a: int, b: int) -> list[int]:
    parent = {a: a}
    queue = deque([a])
    while queue:
        q = queue.popleft()
        if q == b:
            break
        for n in neighbours[q]:
            if n not in parent:
                parent[n] = q
                queue.append(n)
    if b not in parent:
        raise ValueError(f"qubits {a} and {b} are not connected")
    path = [b]
    while path[-1] != a:
        path.append(parent[path[-1]])
    return path[::-1]


def merge_one_qubit(ops: Sequence[Op]) -> list[tuple[str, tuple[int, ...], object]]:
    """Runs of one-qubit gates on a qubit become one 2x2 unitary: ("u", (q,), matrix); others pass as
    ("cx"|"cz"|"measure"|"reset", qubits, op)."""
    pending: dict[int, np.ndarray] = {}
    out: list[tuple[str, tuple[int, ...], object]] = []

    def flush(qubits: Iterable[int]) -> None:
        for q in qubits:
            if q in pending:
                out.append(("u", (q,), pending.pop(q)))

    for op in ops:
        if len(op.qubits) == 1 and op.name not in ("measure", "reset", ROUTE_SWAP) and op.condition is None:
            q = op.qubits[0]
            pending[q] = one_qubit_matrix(op.name, op.params) @ pending.get(q, _I)
            continue
        flush(op.qubits)
        out.append((op.name, op.qubits, op))
    flush(sorted(pending))
    return out


def is_identity(u: np.ndarray) -> bool:
    """True when the 2x2 unitary u is the identity up to global phase (within IDENTITY_TOLERANCE)."""
    phase = u[0, 0] if abs(u[0, 0]) > IDENTITY_TOLERANCE else 1
    return np.allclose(u / phase, _I, atol=IDENTITY_TOLERANCE)


def _basis_with(ops: Sequence[Op], entangler: str) -> list[Op]:
    """One-qubit gates plus a single two-qubit gate, cx or cz (the other one conjugated by H on its target)."""
    other = "cz" if entangler == "cx" else "cx"
    basis: list[Op] = []
    for op in to_basis(ops):
        if op.name == other:
            c, t = op.qubits
            basis += [Op("h", (t,)), Op(entangler, (c, t)), Op("h", (t,))]
        else:
            basis.append(op)
    return basis


def rigetti_natives(ops: Sequence[Op]) -> list[Op]:
    """RX(±pi/2), RZ and CZ: every one-qubit run as RZ-RX(pi/2)-RZ-RX(-pi/2)-RZ, cx as H-CZ-H."""
    out: list[Op] = []
    for name, qubits, item in merge_one_qubit(_basis_with(ops, "cz")):
        if name == "u":
            if is_identity(item):
                continue
            a, b, c = zyz_angles(item)
            q = qubits[0]
            # RY(b) = RX(-pi/2) RZ(b) RX(pi/2) (in circuit order: RX(pi/2) first)
            seq = [("rz", c + 0.0), ("rx", math.pi / 2), ("rz", b), ("rx", -math.pi / 2), ("rz", a)]
            if abs(b) < ANGLE_TOLERANCE:
                seq = [("rz", a + c)]
            out += [Op(n, (q,), (angle,)) for n, angle in seq if n == "rx" or abs(_wrap(angle)) > ANGLE_TOLERANCE]
        else:
            out.append(item)
    return out


#: IonQ's native gates, phases in radians (IonQ's API writes them in turns, phase / 2pi), as IonQ's native-gate
#: documentation defines them, with sigma(phi) = cos(phi) X + sin(phi) Y and the first qubit the left factor:
#:   gpi(phi)          = sigma(phi) = [[0, e^{-i phi}], [e^{i phi}, 0]]              (a pi turn about sigma(phi))
#:   gpi2(phi)         = exp(-i pi/4 sigma(phi)) = [[1, -i e^{-i phi}], [-i e^{i phi}, 1]] / sqrt(2)
#:   ms(phi0, phi1)    = exp(-i pi/4 sigma(phi0) (x) sigma(phi1))          (fully entangling: IonQ's 0.25 turn)
#: Z rotations are not pulses: IonQ applies them virtually by shifting the phases of the later pulses.
IONQ_NATIVES = ("gpi", "gpi2", "ms")


class IonQCircuit(NamedTuple):
    """A circuit compiled to IonQ's natives.

    `ops` holds gpi(phi), gpi2(phi), ms(phi0, phi1) (phases in `params`) and the measurements, in order.
    `frame` is the virtual Z rotation each qubit still carries after its last pulse (qubit -> angle, zero
    angles left out): the ops followed by RZ(frame[q]) on each qubit equal the input circuit up to global
    phase. A Z rotation after the last pulse changes no measurement in the computational basis, so a device
    runs `ops` alone.
    """

    ops: tuple[Op, ...]
    frame: dict[int, float]


def ionq_compile(ops: Sequence[Op]) -> IonQCircuit:
    """Compiles to IonQ's GPI, GPI2 and MS with their phases.

    Every two-qubit gate becomes cx gates (to_basis; cz as H-cx-H), every cx one MS:
    cx(c, t) = RY(pi/2) on c, then MS(0, 0), then RX(-pi/2) on c and t, then RY(-pi/2) on c (up to global
    phase). Each run of one-qubit gates, those corrections included, is merged into one unitary
    e^{ig} RZ(a) RY(b) RZ(c) and emitted as RZ(c) (virtual), then RY(b) as pulses, then RZ(a) (virtual):
    RY(b) is nothing for b = 0, one gpi2(pi/2) for b = pi/2, one gpi(pi/2) for b = pi, and otherwise
    gpi2(0), RZ(b) (virtual), gpi2(pi) (RY(b) = RX(-pi/2) RZ(b) RX(pi/2)). A pulse of phase phi applied after
    a virtual RZ(theta) is the pulse of phase phi - theta applied before it, so each qubit keeps the angle
    of the Z rotations not yet applied (its frame) and every pulse is emitted with its phase shifted by it.
    """
    if any(op.condition is not None for op in ops):
        raise ValueError("IonQ's native gates have no classical control")
    logical: list[Op] = []
    for op in _basis_with(ops, "cx"):
        if op.name == "cx":
            c, t = op.qubits
            logical += [Op("ry", (c,), (math.pi / 2,)), Op("ms", (c, t), (0.0, 0.0)), Op("rx", (c,), (-math.pi / 2,)),
                        Op("rx", (t,), (-math.pi / 2,)), Op("ry", (c,), (-math.pi / 2,))]
        else:
            logical.append(op)
    frame: dict[int, float] = {}
    out: list[Op] = []

    def pulse(name: str, qubit: int, phase: float) -> None:
        out.append(Op(name, (qubit,), (_wrap(phase - frame.get(qubit, 0.0)),)))

    def turn(qubit: int, angle: float) -> None:
        frame[qubit] = _wrap(frame.get(qubit, 0.0) + angle)

    for name, qubits, item in merge_one_qubit(logical):
        if name == "u":
            q = qubits[0]
            a, b, c = zyz_angles(item)  # b in [0, pi]
            turn(q, c)
            if abs(b - math.pi / 2) < ANGLE_TOLERANCE:
                pulse("gpi2", q, math.pi / 2)  # RY(pi/2)
            elif abs(b - math.pi) < ANGLE_TOLERANCE:
                pulse("gpi", q, math.pi / 2)  # Y = i RY(pi)
            elif b >= ANGLE_TOLERANCE:
                pulse("gpi2", q, 0.0)  # RX(pi/2)
                turn(q, b)
                pulse("gpi2", q, math.pi)  # RX(-pi/2)
            turn(q, a)
        elif name == "ms":  # ms(0, 0) in the frame: MS(phi0, phi1) shifts like the pulses on its two qubits
            out.append(Op("ms", qubits, tuple(_wrap(-frame.get(q, 0.0)) for q in qubits)))
        elif name == "measure":
            out.append(item)  # a Z-basis measurement commutes with the frame
        elif name == "reset":
            frame.pop(qubits[0], None)  # |0> carries no Z rotation
            out.append(item)
        else:
            raise ValueError(f"no IonQ compilation for {name}")
    return IonQCircuit(tuple(out), {q: angle for q, angle in sorted(frame.items()) if abs(angle) >= ANGLE_TOLERANCE})


def ionq_natives(ops: Sequence[Op]) -> list[Op]:
    """What an IonQ device runs: ionq_compile's ops (the final virtual Z rotations change no measurement)."""
    return list(ionq_compile(ops).ops)



def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def stats(ops: Sequence[Op]) -> tuple[int, int]:
    """(depth, two-qubit gate count) of a compiled op list, measurements included in the depth."""
    width = 1 + max((q for op in ops for q in op.qubits), default=0)
    circuit = Circuit(width, 0, tuple(ops))
    return circuit.depth(), circuit.two_qubit_gates
