"""Compiling a neutral circuit for a device: basis decomposition, routing on a coupling map, native gates.

Pure Python + numpy. The IBM adapter compiles with Qiskit's own transpiler instead; this module serves the
devices whose SDK has no local compiler here (pyQuil's quilc is a separate server; IonQ compiles in its
cloud), so that they too report a compiled depth and two-qubit gate count, and simulate what they would run.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from services.backends.domain.circuit import Circuit, Op
from services.backends.domain.gates import one_qubit_matrix, zyz_angles

_I = np.eye(2, dtype=complex)


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


#: A SWAP the router inserted, in logical terms: it moves states between physical qubits, so a simulation on
#: logical qubits only relabels them; it costs the noise of three two-qubit gates on the qubits it moves.
ROUTE_SWAP = "route_swap"


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
    phase = u[0, 0] if abs(u[0, 0]) > 1e-9 else 1
    return np.allclose(u / phase, _I, atol=1e-9)


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
            if abs(b) < 1e-9:
                seq = [("rz", a + c)]
            out += [Op(n, (q,), (angle,)) for n, angle in seq if n == "rx" or abs(_wrap(angle)) > 1e-9]
        else:
            out.append(item)
    return out


def ionq_natives(ops: Sequence[Op]) -> list[Op]:
    """IonQ's GPI, GPI2 and MS: cx as MS plus four GPI2 (Z rotations are virtual); a one-qubit run as at
    most GPI2-GPI-GPI2."""
    out: list[Op] = []
    for name, qubits, item in merge_one_qubit(_basis_with(ops, "cx")):
        if name == "u":
            if is_identity(item):
                continue
            _, b, _ = zyz_angles(item)
            q = qubits[0]
            if abs(b) < 1e-9:
                continue  # a pure Z rotation: virtual, tracked in the following pulses' phases
            out += [Op("gpi2", (q,)), Op("gpi", (q,)), Op("gpi2", (q,))] if abs(b - math.pi) < 1e-6 else [
                Op("gpi2", (q,)), Op("gpi2", (q,))]
        elif name == "cx":
            c, t = qubits
            out += [Op("gpi2", (c,)), Op("ms", (c, t)), Op("gpi2", (c,)), Op("gpi2", (t,)), Op("gpi2", (c,))]
        else:
            out.append(item)
    return out


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def stats(ops: Sequence[Op]) -> tuple[int, int]:
    """(depth, two-qubit gate count) of a compiled op list, measurements included in the depth."""
    width = 1 + max((q for op in ops for q in op.qubits), default=0)
    circuit = Circuit(width, 0, tuple(ops))
    return circuit.depth(), circuit.two_qubit_gates
