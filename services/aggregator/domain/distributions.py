"""Counts as numpy arrays: validated parsing, outcome ids, Hellinger distance, largest-remainder rounding."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qnet_common import errors

#: Widths up to this many bits get int64 outcome ids; wider bitstrings are compared as byte strings.
MAX_INT_BITS = 62
_ZERO, _ONE, _COMMA = ord("0"), ord("1"), ord(",")


def parse_counts(backend: str, counts: object) -> tuple[np.ndarray, np.ndarray]:
    """Validates one result's counts and returns (bits, values).

    bits is a (K, width) uint8 array, column 0 the leftmost character (the highest classical bit); values is a
    (K,) int64 array of non-negative counts. Raises InvalidCounts naming the key and what to fix.
    """
    if not isinstance(counts, Mapping) or not counts:
        raise errors.InvalidCounts(
            f'result {backend!r} has no counts: send a map of bitstring to count, for example {{"00": 512, "11": 512}}',
            backend=backend,
        )
    keys = list(counts)
    bits = _bits_fast(keys)
    if bits is None:
        _raise_bad_key(backend, keys)
    return bits, _values(backend, keys, list(counts.values()))


def _bits_fast(keys: list[object]) -> np.ndarray | None:
    """One join and one buffer view for the whole map; None when any key is malformed (then explain slowly).

    Correct because the joined buffer must have a comma at every (width + 1)-th byte and only 0 or 1 elsewhere:
    a key of another width, or with any other character, breaks that grid.
    """
    first = keys[0]
    if not isinstance(first, str) or not first:
        return None
    width, k = len(first), len(keys)
    try:
        joined = ",".join(keys).encode("ascii")  # type: ignore[arg-type]
    except (TypeError, UnicodeEncodeError):
        return None
    if len(joined) != k * (width + 1) - 1:
        return None
    grid = np.frombuffer(joined + b",", dtype=np.uint8).reshape(k, width + 1)
    if not (grid[:, width] == _COMMA).all():
        return None
    bits = grid[:, :width] - np.uint8(_ZERO)  # wraps below '0', so one comparison checks both ends
    if (bits > 1).any():
        return None
    return np.ascontiguousarray(bits)


def _raise_bad_key(backend: str, keys: list[object]) -> None:
    width = len(keys[0]) if isinstance(keys[0], str) else None
    for key in keys:
        if not isinstance(key, str):
            raise errors.InvalidCounts(
                f'result {backend!r}: bitstring {key!r} is not a string; send keys such as "0101"', backend=backend
            )
        if not key:
            raise errors.InvalidCounts(
                f"result {backend!r} has an empty bitstring; every key needs one 0 or 1 per classical bit",
                backend=backend,
            )
        if set(key) - {"0", "1"}:
            hint = ""
            if " " in key:
                hint = " (join the classical registers without spaces)"
            elif key.lower().startswith("0x"):
                hint = " (send binary, not hexadecimal)"
            raise errors.InvalidCounts(
                f"result {backend!r}: bitstring {key!r} has characters other than 0 and 1{hint}", backend=backend
            )
        if len(key) != width:
            raise errors.InvalidCounts(
                f"result {backend!r} mixes bitstring widths: {keys[0]!r} has {width} bits, {key!r} has {len(key)}; "
                "every bitstring must have one character per classical bit",
                backend=backend,
            )
    raise errors.InvalidCounts(f"result {backend!r} has malformed bitstrings", backend=backend)  # not reached


def _values(backend: str, keys: list[object], values: list[object]) -> np.ndarray:
    array = np.array(values)
    if array.dtype.kind in "iu":
        counts = array.astype(np.int64)
        if array.dtype.kind == "u" and (array > np.iinfo(np.int64).max).any():
            bad = int(np.flatnonzero(array > np.iinfo(np.int64).max)[0])
            raise errors.InvalidCounts(f"result {backend!r}: count {values[bad]!r} for {keys[bad]!r} is too large")
    elif array.dtype.kind == "f":
        bad_mask = ~np.isfinite(array) | (array != np.round(array))
        if bad_mask.any():
            bad = int(np.flatnonzero(bad_mask)[0])
            raise errors.InvalidCounts(
                f"result {backend!r}: count {values[bad]!r} for {keys[bad]!r} is not an integer; "
                "counts are numbers of shots",
                backend=backend,
            )
        counts = array.astype(np.int64)
    else:
        for key, value in zip(keys, values, strict=True):
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise errors.InvalidCounts(
                    f"result {backend!r}: count {value!r} for {key!r} is not an integer; counts are numbers of shots",
                    backend=backend,
                )
            if abs(int(value)) >= 2**63:
                raise errors.InvalidCounts(f"result {backend!r}: count {value!r} for {key!r} is too large")
        counts = np.array([int(v) for v in values], dtype=np.int64)  # a mix of int types
    negative = np.flatnonzero(counts < 0)
    if negative.size:
        bad = int(negative[0])
        raise errors.InvalidCounts(
            f"result {backend!r}: count {values[bad]!r} for {keys[bad]!r} is negative; counts must be >= 0",
            backend=backend,
        )
    return counts


def outcome_ids(bits: np.ndarray) -> np.ndarray:
    """Sortable ids whose order is the bitstrings' lexicographic order: int64 up to 62 bits, else bytes."""
    width = bits.shape[1]
    if width <= MAX_INT_BITS:
        powers = np.left_shift(np.int64(1), np.arange(width - 1, -1, -1, dtype=np.int64))
        return bits.astype(np.int64) @ powers
    return np.ascontiguousarray(bits + np.uint8(_ZERO)).view(f"S{width}").ravel()


def bits_of_ids(ids: np.ndarray, width: int) -> np.ndarray:
    """Inverse of outcome_ids: (K, width) uint8, column 0 the leftmost character."""
    if ids.dtype.kind == "S":
        return np.frombuffer(ids.tobytes(), dtype=np.uint8).reshape(-1, width) - np.uint8(_ZERO)
    big_endian = ids.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(big_endian, axis=1)[:, 64 - width :]


def bitstrings(ids: np.ndarray, width: int) -> list[str]:
    """The bitstrings of outcome ids, as Python strings."""
    if ids.dtype.kind == "S":
        return ids.astype(f"U{width}").tolist()
    chars = bits_of_ids(ids, width).astype(np.uint32) + np.uint32(_ZERO)
    return np.ascontiguousarray(chars).view(f"U{width}").ravel().tolist()


def largest_remainder(probabilities: np.ndarray, shots: int) -> np.ndarray:
    """Integers summing exactly to `shots`, each the floor of p * shots plus at most one.

    The units left after flooring go to the largest remainders; ties go to the larger probability, then to the
    earlier outcome (ids are sorted, so the lexicographically smaller bitstring). p * shots is rounded to 9
    decimals first so that float noise (0.30000000000000004) cannot decide a tie.
    """
    total = probabilities.sum()
    scaled = np.round(probabilities * (shots / total), 9)
    floors = np.floor(scaled)
    remainders = scaled - floors
    counts = floors.astype(np.int64)
    missing = shots - int(counts.sum())
    if missing > 0:  # 0 < missing < K: the remainders are each below 1 and sum to `missing`
        # Everything above the missing-th largest remainder gets a unit; only the ties at it need sorting.
        threshold = np.partition(remainders, remainders.size - missing)[remainders.size - missing]
        above = np.flatnonzero(remainders > threshold)
        tied = np.flatnonzero(remainders == threshold)
        tied = tied[np.lexsort((tied, -probabilities[tied]))]
        counts[above] += 1
        counts[tied[: missing - above.size]] += 1
    return counts


def _as_distributions(p: object, q: object) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(p, Mapping) and isinstance(q, Mapping):
        keys = sorted(set(p) | set(q))
        a = np.array([float(p.get(key, 0.0)) for key in keys], dtype=float)
        b = np.array([float(q.get(key, 0.0)) for key in keys], dtype=float)
    else:
        a, b = np.asarray(p, dtype=float).ravel(), np.asarray(q, dtype=float).ravel()
        if a.shape != b.shape:
            raise errors.InvalidArgument(f"distributions have different lengths: {a.size} and {b.size}")
    for name, x in (("p", a), ("q", b)):
        if not np.isfinite(x).all() or (x < 0).any() or x.sum() <= 0:
            raise errors.InvalidArgument(f"{name} must be non-negative counts or probabilities with a positive sum")
    return a / a.sum(), b / b.sum()


def hellinger_distance(p: object, q: object) -> float:
    """H(p, q) = sqrt(1 - sum_x sqrt(p(x) q(x))) in [0, 1]; p and q are counts or probabilities (normalised here).

    Either two mappings bitstring -> count/probability, or two aligned arrays.
    """
    a, b = _as_distributions(p, q)
    # The same quantity as 1/2 sum_x (sqrt p(x) - sqrt q(x))^2, which has no cancellation for close p and q.
    return math.sqrt(min(1.0, 0.5 * float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())))


def hellinger_fidelity(p: object, q: object) -> float:
    """(1 - H(p, q)^2)^2 = (sum_x sqrt(p(x) q(x)))^2 in [0, 1], as qiskit.quantum_info.hellinger_fidelity."""
    a, b = _as_distributions(p, q)
    return min(1.0, float(np.sqrt(a * b).sum())) ** 2
