"""Readout mitigation recovers the distribution a known readout error distorted, bit 0 being the rightmost."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnet_common import errors
from services.aggregator.domain.aggregation import BackendCounts, aggregate, hellinger_distance
from services.aggregator.domain.distributions import largest_remainder


def assignment(e0: float, e1: float) -> np.ndarray:
    return np.array([[1 - e0, e1], [e0, 1 - e1]])


def measured(true: np.ndarray, readout_errors: list[tuple[float, float]]) -> np.ndarray:
    """The full assignment matrix A_{w-1} (x) ... (x) A_0 applied to the true distribution (index = integer value)."""
    full = reduce(np.kron, [assignment(*pair) for pair in reversed(readout_errors)])
    return full @ true


def as_counts(distribution: np.ndarray, shots: int, width: int) -> dict[str, int]:
    counts = largest_remainder(distribution, shots)
    return {format(i, f"0{width}b"): int(c) for i, c in enumerate(counts) if c}


def test_each_bit_is_corrected_with_its_own_errors():
    # Only bit 0 (rightmost) is noisy and only for prepared 0: "00" reads as "01" 20% of the time.
    readout_errors = [(0.2, 0.0), (0.0, 0.0)]
    aggregation = aggregate([BackendCounts("a", {"00": 800, "01": 200}, readout_errors=readout_errors)], mitigate=True)
    assert aggregation.mitigated
    assert aggregation.mitigated_counts == {"a": {"00": 1000}}
    assert aggregation.counts == {"00": 1000}


@settings(max_examples=int(__import__("os").environ.get("N", 40)), deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda width: st.tuples(
            st.lists(st.floats(0.0, 1.0), min_size=1 << width, max_size=1 << width).filter(lambda p: sum(p) > 0.1),
            st.lists(st.tuples(st.floats(0.0, 0.2), st.floats(0.0, 0.2)), min_size=width, max_size=width),
        )
    )
)
def test_mitigation_recovers_a_known_distribution(case):
    true, readout_errors = case
    width = len(readout_errors)
    true = np.array(true) / sum(true)
    counts = as_counts(measured(true, readout_errors), 1_000_000, width)
    aggregation = aggregate([BackendCounts("device", counts, readout_errors=readout_errors)], mitigate=True)
    recovered = np.zeros(1 << width)
    for key, p in aggregation.probabilities.items():
        recovered[int(key, 2)] = p
    assert 0.5 * np.abs(recovered - true).sum() < 2e-3 * width
    assert sum(aggregation.mitigated_counts["device"].values()) == 1_000_000


def test_mitigation_brings_noisy_backends_together():
    bell = np.array([0.5, 0, 0, 0.5])
    clean = as_counts(bell, 4000, 2)
    noisy_errors = [(0.08, 0.12), (0.05, 0.1)]
    noisy = as_counts(measured(bell, noisy_errors), 4000, 2)
    found = [
        BackendCounts("clean", clean, readout_errors=[(0.0, 0.0), (0.0, 0.0)]),
        BackendCounts("noisy", noisy, readout_errors=noisy_errors),
    ]
    raw = aggregate(found)
    mitigated = aggregate(found, mitigate=True)
    assert mitigated.confidence > raw.confidence
    assert mitigated.counts == {"00": 2000, "11": 2000}
    assert mitigated.mitigated_counts["noisy"] == {"00": 2000, "11": 2000}
    assert not raw.mitigated and raw.mitigated_counts == {}
    assert hellinger_distance(noisy, clean) > 0.1


def test_wide_registers_use_the_observed_subspace():
    """22 bits: beyond the dense inverse; the M3-style solve on the observed outcomes."""
    width, e0 = 22, 0.01
    readout_errors = [(e0, 0.02)] * width
    zeros = "0" * width
    counts = {zeros: round(1e6 * (1 - e0) ** width)}
    for bit in range(width):  # single flips only: the subspace M3 works in
        key = zeros[: width - 1 - bit] + "1" + zeros[width - bit :]
        counts[key] = round(1e6 * e0 * (1 - e0) ** (width - 1))
    aggregation = aggregate([BackendCounts("wide", counts, readout_errors=readout_errors)], mitigate=True)
    assert aggregation.probabilities[zeros] == pytest.approx(1.0, abs=0.01)


def test_wide_registers_with_too_many_outcomes_are_refused_with_the_limit():
    width = 21
    counts = {format(i, f"0{width}b"): 1 for i in range(2049)}
    with pytest.raises(errors.InvalidArgument) as failure:
        aggregate([BackendCounts("wide", counts, readout_errors=[(0.01, 0.01)] * width)], mitigate=True)
    assert "result 'wide': mitigation of more than 20 bits handles at most 2048 distinct outcomes" in str(failure.value)
