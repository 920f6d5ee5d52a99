"""The pairwise work of an aggregation: vectorised, exact, and bounded by a documented limit on results."""

from __future__ import annotations

import contextlib
import tracemalloc

import numpy as np
import pytest

from qnet_common import errors
from services.aggregator.domain import aggregation
from services.aggregator.domain.aggregation import MAX_RESULTS, BackendCounts, aggregate


def shot_noise_pair_by_pair(p: np.ndarray, shots: np.ndarray) -> np.ndarray:
    """The definition, one pair at a time: 1/2 sum_x min((1 - m_x) s, 2 m_x), m = (p_i + p_j)/2."""
    n = len(p)
    noise = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                m = (p[i] + p[j]) / 2
                s = 0.25 * (1 / shots[i] + 1 / shots[j])
                noise[i, j] = 0.5 * np.minimum((1 - m) * s, 2 * m).sum()
    return noise


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_the_blocked_shot_noise_equals_the_pairwise_definition(block, monkeypatch):
    rng = np.random.default_rng(block)
    p = rng.dirichlet(np.full(9, 0.3), size=13)
    p[2, :4] = 0.0  # outcomes some results never saw
    p[2] /= p[2].sum()
    shots = rng.integers(10, 5000, size=13).astype(float)

    monkeypatch.setattr(aggregation, "_PAIR_BLOCK", block)
    found = aggregation._shot_noise(p, shots, np.arange(13))
    expected = shot_noise_pair_by_pair(p, shots)
    off_diagonal = ~np.eye(13, dtype=bool)
    assert np.allclose(found[off_diagonal], expected[off_diagonal], rtol=1e-12, atol=1e-15)
    partners = np.array([5, 0, 9])
    assert np.allclose(aggregation._shot_noise(p, shots, partners)[off_diagonal[:, partners]],
                       expected[:, partners][off_diagonal[:, partners]], rtol=1e-12, atol=1e-15)


def test_more_results_than_the_limit_are_refused_naming_the_field_and_the_limit():
    results = [BackendCounts(f"b{i}", {"0": 5, "1": 5}) for i in range(MAX_RESULTS + 1)]
    with pytest.raises(errors.InvalidArgument, match=f"field 'results' has {MAX_RESULTS + 1} results: at most"):
        aggregate(results)
    assert aggregate(results[:MAX_RESULTS]).counts == {"0": 5, "1": 5}


def test_beyond_exact_pairs_agreement_takes_each_result_with_the_weightiest_and_stays_close():
    rng = np.random.default_rng(3)
    results = [BackendCounts(f"b{i:04d}", dict(zip(("00", "01", "10", "11"), map(int, row), strict=True)))
               for i, row in enumerate(rng.multinomial(1000, (0.47, 0.03, 0.03, 0.47), size=600))]
    exact = aggregate(results[: aggregation.EXACT_PAIRS])
    sampled = aggregate(results)
    assert abs(exact.confidence - sampled.confidence) < 0.01, (exact.confidence, sampled.confidence)


def test_a_disjoint_pair_among_thousands_is_found_exactly():
    results = [BackendCounts(f"b{i:04d}", {"00": 5, "11": 5}) for i in range(3000)]
    results[1234] = BackendCounts("b1234", {"01": 10})
    results[2999] = BackendCounts("b2999", {"10": 10})
    with pytest.raises(errors.AggregationFailed) as raised:
        aggregate(results)
    # b1234 and b2999 each share nothing with the 2,998 others, nor with each other: 2,998 + 2,998 + 1 pairs.
    assert "b0000 and b1234" in raised.value.message and f"{2998 + 2998 + 1 - 10} more pairs" in raised.value.message


def test_disjoint_results_are_named_without_listing_every_pair():
    results = [BackendCounts(f"b{i:02d}", {format(i, "06b"): 10}) for i in range(40)]
    with pytest.raises(errors.AggregationFailed) as raised:
        aggregate(results)
    assert "b00 and b01" in raised.value.message and "770 more pairs" in raised.value.message


def peak_mib(call) -> float:
    """Peak memory numpy and Python allocate during `call` (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(errors.QnetError):
            call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_thousands_of_results_over_many_distinct_outcomes_stay_within_bounded_memory():
    """8,000 results of one 16-bit outcome each (about 460 KiB of JSON) took 4.5 GiB and 33 s: a dense table of
    every result over all 2^16 outcomes, and the pairwise check as dense matrix products."""
    rng = np.random.default_rng(8)
    spread = [BackendCounts(f"b{i:04d}", {format(int(x), "016b"): 7}) for i, x in enumerate(
        rng.integers(0, 1 << 16, size=8000))]
    with pytest.raises(errors.InvalidArgument, match=r"8000 results over \d+ distinct outcomes make a table of"):
        aggregate(spread)
    assert peak_mib(lambda: aggregate(spread)) < 64
    # Within the table's limit (8,000 x 2^9 cells), every pair is still checked exactly.
    results = [BackendCounts(f"b{i:04d}", {format(int(x), "09b"): 7, format(int(y), "09b"): 3}) for i, (x, y) in
               enumerate(rng.integers(0, 1 << 9, size=(8000, 2)))]
    with pytest.raises(errors.AggregationFailed) as raised:
        aggregate(results)
    present = np.zeros((8000, 1 << 9), dtype=bool)
    for i, r in enumerate(sorted(results, key=lambda r: r.backend)):
        present[i, [int(k, 2) for k in r.counts]] = True
    shared = present.astype(np.float32) @ present.T.astype(np.float32)
    disjoint = int((np.triu(shared == 0, k=1)).sum())
    assert f"{disjoint - 10} more pairs" in raised.value.message
    assert peak_mib(lambda: aggregate(results)) < 256


def test_a_table_of_more_cells_than_the_limit_is_refused_before_it_is_built():
    width = 20
    per_result = aggregation.MAX_CELLS // 1000 + 1
    results = [BackendCounts(f"b{i}", {format(i * per_result + j, f"0{width + 4}b"): 1 for j in range(per_result)})
               for i in range(1000)]
    with pytest.raises(errors.InvalidArgument, match=r"1000 results over \d+ distinct outcomes.* at most"):
        aggregate(results)


def test_a_result_with_more_outcomes_than_the_limit_is_refused_naming_it():
    too_many = {format(j, "021b"): 1 for j in range(aggregation.MAX_OUTCOMES + 1)}
    with pytest.raises(errors.InvalidCounts, match=rf"result 'big' has {aggregation.MAX_OUTCOMES + 1} outcomes"):
        aggregate([BackendCounts("big", too_many)])


def test_mitigating_more_results_than_the_dense_table_holds_is_refused_before_mitigating():
    width = 16  # mitigation spreads each result over all 2^16 outcomes
    n = aggregation.MAX_CELLS // (1 << width) + 1
    results = [BackendCounts(f"b{i}", {"0" * width: 10}, readout_errors=[(0.01, 0.02)] * width) for i in range(n)]
    with pytest.raises(errors.InvalidArgument, match="mitigat"):
        aggregate(results, mitigate=True)


@pytest.mark.parametrize("seed", range(6))
def test_the_disjoint_pairs_are_exactly_those_of_the_definition(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 60)), int(rng.integers(1, 12))
    present = rng.random((n, k)) < rng.uniform(0.05, 0.4)
    present[np.arange(n), rng.integers(0, k, size=n)] = True  # every result saw something
    expected = [(i, j) for i in range(n) for j in range(i + 1, n) if not (present[i] & present[j]).any()]
    pairs, count = aggregation._disjoint_pairs(present)
    assert count == len(expected) and pairs == expected[:10]
