"""Invariants of every aggregation method, checked on generated results (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qnet_common import errors
from services.aggregator.domain.aggregation import METHODS, BackendCounts, aggregate, hellinger_distance

ALL = list(METHODS)
FAST = settings(max_examples=int(__import__("os").environ.get("N", 60)), deadline=None)


@st.composite
def results(draw, min_size=1, max_size=5, min_total=1):
    """Results over one width that all saw the all-zeros outcome, so that no pair is disjoint."""
    width = draw(st.integers(1, 4))
    outcomes = [format(i, f"0{width}b") for i in range(1 << width)]
    n = draw(st.integers(min_size, max_size))
    found = []
    for i in range(n):
        keys = draw(st.lists(st.sampled_from(outcomes[1:]), unique=True, max_size=len(outcomes) - 1))
        counts = {outcomes[0]: draw(st.integers(1, 500))}
        counts.update({key: draw(st.integers(0, 500)) for key in keys})
        counts[outcomes[0]] += max(0, min_total - sum(counts.values()))
        fidelity = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
        found.append(BackendCounts(f"backend_{i}", counts, fidelity=fidelity))
    return found


@FAST
@given(results(), st.sampled_from(ALL), st.one_of(st.none(), st.integers(1, 5000)))
def test_counts_are_integers_summing_to_shots(found, method, shots):
    aggregation = aggregate(found, method, shots=shots, max_divergence=1.0)
    expected = shots if shots is not None else max(sum(r.counts.values()) for r in found)
    assert aggregation.shots == expected
    assert sum(aggregation.counts.values()) == expected
    assert all(isinstance(c, int) and c > 0 for c in aggregation.counts.values())
    assert sum(aggregation.probabilities.values()) == pytest.approx(1.0)
    assert 0.0 <= aggregation.confidence <= 1.0
    assert sum(w.weight for w in aggregation.weights) == pytest.approx(1.0)
    assert all(0.0 <= w.distance <= 1.0 for w in aggregation.weights)


@FAST
@given(results(min_size=2), st.sampled_from(ALL), st.randoms(use_true_random=False))
def test_the_order_of_the_results_does_not_matter(found, method, rng):
    shuffled = list(found)
    rng.shuffle(shuffled)
    first = aggregate(found, method, max_divergence=1.0)
    second = aggregate(shuffled, method, max_divergence=1.0)
    assert first.counts == second.counts
    assert first.probabilities == second.probabilities
    assert first.confidence == second.confidence
    assert sorted(first.weights, key=lambda w: w.backend) == sorted(second.weights, key=lambda w: w.backend)
    assert [w.backend for w in second.weights] == [r.backend for r in shuffled]


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["000", "001", "010", "011", "100", "101", "110", "111"]), st.integers(125, 3000), min_size=1
    ),
    st.integers(1, 6),
    st.sampled_from(ALL),
)
def test_identical_results_give_that_distribution_with_confidence_near_1(counts, copies, method):
    found = [BackendCounts(f"b{i}", counts) for i in range(copies)]
    aggregation = aggregate(found, method)
    assert aggregation.counts == counts
    assert aggregation.confidence >= 0.95
    assert all(w.distance == pytest.approx(0.0, abs=1e-7) for w in aggregation.weights)


@FAST
@given(
    st.lists(st.integers(200, 2000), min_size=2, max_size=6),
    st.integers(1, 4),
    st.integers(0, 5),
    st.sampled_from(ALL),
)
def test_a_divergent_outlier_lowers_the_confidence(base, agreeing, favourite, method):
    """Agreeing backends sample one distribution; the outlier puts 97% on one of its outcomes."""
    outcomes = [format(i, "03b") for i in range(len(base))]
    counts = dict(zip(outcomes, base, strict=True))
    target = outcomes[favourite % len(outcomes)]
    outlier = {key: 30 if key != target else 97 * 30 * (len(outcomes) - 1) // 3 for key in outcomes}
    found = [BackendCounts(f"agree_{i}", counts) for i in range(agreeing)]
    assume(hellinger_distance(counts, outlier) > 0.25)
    before = aggregate(found, method, max_divergence=1.0)
    after = aggregate([*found, BackendCounts("outlier", outlier)], method, max_divergence=1.0)
    assert after.confidence < before.confidence
    if method == "confidence_weighted" and agreeing >= 2:  # with one other result, neither is the outlier
        outlier_weight = next(w.weight for w in after.weights if w.backend == "outlier")
        assert outlier_weight < min(w.weight for w in after.weights if w.backend != "outlier")


@FAST
@given(
    st.dictionaries(st.sampled_from(["00", "01", "10", "11"]), st.integers(1, 1000), min_size=1),
    st.dictionaries(st.sampled_from(["00", "01", "10", "11"]), st.integers(1, 1000), min_size=1),
    st.floats(0.01, 1.0),
    st.floats(0.01, 1.0),
    st.floats(0.01, 1.0),
)
def test_a_higher_fidelity_pulls_the_aggregate_towards_its_result(a, b, low, high, other):
    assume(set(a) & set(b))
    low, high = sorted((low, high))
    pulled = {}
    for fidelity in (low, high):
        found = [BackendCounts("a", a, fidelity=fidelity), BackendCounts("b", b, fidelity=other)]
        aggregation = aggregate(found, "weighted_average", max_divergence=1.0)
        weights = {w.backend: w.weight for w in aggregation.weights}
        assert weights["a"] == pytest.approx(fidelity / (fidelity + other))
        pulled[fidelity] = hellinger_distance(aggregation.probabilities, a)
    assert pulled[high] <= pulled[low] + 1e-12


@FAST
@given(
    st.integers(1, 6),
    st.integers(1, 100_000),
    st.integers(1, 100_000),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.sampled_from(ALL),
    st.sampled_from([0.5, 0.9, 1.0]),
)
def test_opposite_deterministic_results_always_fail(width, n0, n1, f0, f1, method, max_divergence):
    assume((f0 or 1.0) + (f1 or 1.0) > 0 or method != "weighted_average")
    zeros, ones = "0" * width, "1" * width
    found = [BackendCounts("zeros", {zeros: n0}, fidelity=f0), BackendCounts("ones", {ones: n1}, fidelity=f1)]
    if f0 == 0.0 and f1 == 0.0 and method == "weighted_average":
        return
    with pytest.raises(errors.AggregationFailed) as failure:
        aggregate(found, method, max_divergence=max_divergence)
    assert "zeros=" in failure.value.message and "ones=" in failure.value.message
    with pytest.raises(errors.AggregationFailed):  # with the default threshold, on distances alone
        aggregate([*found, BackendCounts("both", {zeros: 1, ones: 1})], method)
