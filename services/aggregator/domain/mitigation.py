"""Readout-error mitigation of one result: tensored inverse per bit, or an M3-style solve for wide registers.

Each classical bit j has an assignment matrix A_j = [[1 - e0, e1], [e0, 1 - e1]] (columns: prepared 0 and 1,
rows: read 0 and 1) with e0 = p(1|0) and e1 = p(0|1). The measured distribution is (A_{w-1} x ... x A_0) p, so
p = (A_{w-1}^-1 x ... x A_0^-1) p_measured; negative entries (noise) are clipped to 0 and the rest renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qnet_common import errors
from services.aggregator.domain.distributions import bits_of_ids

#: Up to this many bits the full 2^w tensored inverse is applied (8 MiB per result at 20 bits).
DENSE_MAX_BITS = 20
#: Wider registers: M3-style solve restricted to the observed outcomes, at most this many of them.
SUBSPACE_MAX_OUTCOMES = 2048
#: Mitigated probabilities below this are float noise of the inverse and become 0.
_NOISE = 1e-12


def assignment_matrices(backend: str, readout_errors: Sequence[Sequence[float]], width: int) -> np.ndarray:
    """Validated (width, 2, 2) assignment matrices, bit 0 first."""
    if len(readout_errors) != width:
        raise errors.InvalidArgument(
            f"result {backend!r} has {len(readout_errors)} readout_errors but {width}-bit bitstrings; send one "
            "(p(1|0), p(0|1)) pair per classical bit, bit 0 (the rightmost character) first",
            backend=backend,
        )
    try:
        pairs = np.array([[float(e0), float(e1)] for e0, e1 in readout_errors], dtype=float).reshape(width, 2)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(
            f"result {backend!r}: each readout error must be a pair of numbers (p(1|0), p(0|1))", backend=backend
        ) from None
    for bit, (e0, e1) in enumerate(pairs):
        if not (0.0 <= e0 <= 1.0 and 0.0 <= e1 <= 1.0):
            raise errors.InvalidArgument(
                f"result {backend!r}: readout error of bit {bit} ({e0}, {e1}) must be probabilities in [0, 1]",
                backend=backend,
            )
        if e0 + e1 >= 1.0:
            raise errors.InvalidArgument(
                f"result {backend!r}: readout error of bit {bit} has p(1|0) + p(0|1) = {e0 + e1:g} >= 1, so its "
                "readout carries no information and cannot be inverted; send errors that sum to less than 1",
                backend=backend,
            )
    e0, e1 = pairs[:, 0], pairs[:, 1]
    return np.stack([np.stack([1 - e0, e1], axis=-1), np.stack([e0, 1 - e1], axis=-1)], axis=1)


def mitigate(
    backend: str, bits: np.ndarray, probabilities: np.ndarray, matrices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(bits, probabilities) of the mitigated distribution: outcomes with a positive probability only."""
    width = bits.shape[1]
    dense = width <= DENSE_MAX_BITS
    if dense:
        estimate = _tensored_inverse(bits, probabilities, matrices)
    else:
        if bits.shape[0] > SUBSPACE_MAX_OUTCOMES:
            raise errors.InvalidArgument(
                f"result {backend!r}: mitigation of more than {DENSE_MAX_BITS} bits handles at most "
                f"{SUBSPACE_MAX_OUTCOMES} distinct outcomes per result and this one has {bits.shape[0]}; aggregate "
                "without mitigate, or send fewer bits",
                backend=backend,
            )
        estimate = _subspace_solve(bits, probabilities, matrices)
    estimate[estimate < _NOISE] = 0.0
    keep = np.flatnonzero(estimate)
    kept_bits = bits_of_ids(keep.astype(np.int64), width) if dense else bits[keep]
    return kept_bits, estimate[keep] / estimate[keep].sum()


def _tensored_inverse(bits: np.ndarray, probabilities: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """The mitigated distribution over all 2^width outcomes, indexed by the outcome's integer value."""
    width = bits.shape[1]
    powers = np.left_shift(np.int64(1), np.arange(width - 1, -1, -1, dtype=np.int64))
    dense = np.zeros(1 << width)
    dense[bits.astype(np.int64) @ powers] = probabilities
    tensor = dense.reshape((2,) * width)
    for bit in range(width):
        axis = width - 1 - bit  # bit 0 is the rightmost character, the last axis
        inverse = np.linalg.inv(matrices[bit])
        tensor = np.moveaxis(np.tensordot(inverse, tensor, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(tensor).ravel()


def _subspace_solve(bits: np.ndarray, probabilities: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """M3 (Nation et al., PRX Quantum 2, 040326): the assignment matrix restricted to the observed outcomes,
    columns renormalised to 1, solved directly."""
    outcomes, width = bits.shape
    reduced = np.ones((outcomes, outcomes))
    for bit in range(width):
        column = bits[:, width - 1 - bit].astype(np.intp)
        reduced *= matrices[bit][column[:, None], column[None, :]]
    reduced /= reduced.sum(axis=0, keepdims=True)
    try:
        return np.linalg.solve(reduced, probabilities)
    except np.linalg.LinAlgError:  # singular restriction: the least-squares solution is the best estimate left
        return np.linalg.lstsq(reduced, probabilities, rcond=None)[0]
