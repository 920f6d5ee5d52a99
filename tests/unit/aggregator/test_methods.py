"""What each method computes on small worked examples, the confidence, rounding and the methods' catalogue."""

from __future__ import annotations

import math

import pytest

from qnet_common import errors
from services.aggregator.domain.aggregation import (
    DEFAULT_MAX_DIVERGENCE,
    METHODS,
    BackendCounts,
    aggregate,
    hellinger_distance,
    hellinger_fidelity,
)
from services.aggregator.domain.distributions import largest_remainder

SPEC = [  # the spec's example of strategy "all" with aggregation
    BackendCounts("ionq_simulator", {"00": 510, "11": 514}),
    BackendCounts("ibm_brisbane", {"00": 505, "11": 519}),
    BackendCounts("rigetti_aspen", {"00": 515, "11": 509}),
]


@pytest.mark.parametrize("method", list(METHODS))
def test_the_spec_example_aggregates_to_a_bell_distribution_with_high_confidence(method):
    aggregation = aggregate(SPEC, method)
    assert aggregation.counts == {"00": 510, "11": 514}
    assert 0.97 <= aggregation.confidence < 1.0
    assert [w.backend for w in aggregation.weights] == ["ionq_simulator", "ibm_brisbane", "rigetti_aspen"]


def test_weighted_average_weighs_by_fidelity():
    found = [
        BackendCounts("good", {"0": 90, "1": 10}, fidelity=0.9),
        BackendCounts("poor", {"0": 50, "1": 50}, fidelity=0.1),
    ]
    aggregation = aggregate(found, "weighted_average", shots=1000)
    assert aggregation.counts == {"0": 860, "1": 140}  # 0.9 * 0.9 + 0.1 * 0.5
    assert [w.weight for w in aggregation.weights] == pytest.approx([0.9, 0.1])


def test_majority_vote_drops_outcomes_only_a_minority_saw():
    found = [
        BackendCounts("a", {"00": 500, "11": 500}),
        BackendCounts("b", {"00": 480, "11": 500, "01": 20}),
        BackendCounts("c", {"00": 500, "11": 480, "10": 20}),
    ]
    aggregation = aggregate(found, "majority_vote", shots=1000)
    assert set(aggregation.counts) == {"00", "11"}
    assert aggregation.counts == {"00": 500, "11": 500}
    assert aggregate(found, "weighted_average").counts.keys() == {"00", "01", "10", "11"}


def test_majority_vote_without_a_majority_keeps_the_most_voted_outcomes():
    # Every pair of the four shares exactly one outcome: each outcome has two votes of four, a tie.
    found = [
        BackendCounts("a", {"000": 5, "001": 5, "010": 5}),
        BackendCounts("b", {"000": 5, "011": 5, "100": 5}),
        BackendCounts("c", {"001": 5, "011": 5, "101": 5}),
        BackendCounts("d", {"010": 5, "100": 5, "101": 5}),
    ]
    aggregation = aggregate(found, "majority_vote", max_divergence=1.0)
    assert aggregation.probabilities == pytest.approx(
        {key: 1 / 6 for key in ("000", "001", "010", "011", "100", "101")}
    )
    found[0] = BackendCounts("a", {"000": 5, "001": 5, "010": 5, "101": 1})  # now "101" has three votes of four
    assert aggregate(found, "majority_vote", max_divergence=1.0).counts == {"101": 16}


def test_median_is_per_outcome_and_renormalised():
    found = [
        BackendCounts("a", {"0": 60, "1": 40}),
        BackendCounts("b", {"0": 70, "1": 30}),
        BackendCounts("c", {"0": 95, "1": 5}),
    ]
    aggregation = aggregate(found, "median", shots=100)
    assert aggregation.probabilities == pytest.approx({"0": 0.7, "1": 0.3})  # medians 0.7 and 0.3
    found = [
        BackendCounts("a", {"0": 50, "1": 50}),
        BackendCounts("b", {"0": 60, "1": 40}),
        BackendCounts("c", {"0": 90, "1": 10}),
    ]
    assert aggregate(found, "median").probabilities == pytest.approx({"0": 0.6 / 1.0, "1": 0.4 / 1.0})


def test_median_renormalises_when_the_medians_do_not_sum_to_1():
    found = [
        BackendCounts("a", {"00": 5, "01": 5}),
        BackendCounts("b", {"01": 5, "10": 5}),
        BackendCounts("c", {"10": 5, "00": 5}),
    ]
    aggregation = aggregate(found, "median", max_divergence=1.0)
    assert aggregation.probabilities == pytest.approx({"00": 1 / 3, "01": 1 / 3, "10": 1 / 3})


def test_confidence_weighted_gives_more_shots_more_weight_and_outliers_less():
    same = {"0": 500, "1": 500}
    found = [
        BackendCounts("small", {"0": 50, "1": 50}),
        BackendCounts("large", {"0": 5000, "1": 5000}),
        BackendCounts("mid", same),
    ]
    weights = {w.backend: w.weight for w in aggregate(found, "confidence_weighted").weights}
    assert weights["large"] > weights["mid"] > weights["small"]
    assert weights["large"] / weights["small"] == pytest.approx(100)
    found = [
        BackendCounts("a", same),
        BackendCounts("b", {"0": 510, "1": 490}),
        BackendCounts("c", {"0": 490, "1": 510}),
        BackendCounts("outlier", {"0": 800, "1": 200}),
    ]
    aggregation = aggregate(found, "confidence_weighted")
    weights = {w.backend: w.weight for w in aggregation.weights}
    assert weights["outlier"] < 0.01
    assert aggregation.probabilities["0"] == pytest.approx(0.5, abs=0.005)
    assert aggregate(found, "weighted_average").probabilities["0"] == pytest.approx(0.575)


def test_confidence_of_one_backend_is_its_sampling_precision():
    aggregation = aggregate([BackendCounts("a", {"0": 500, "1": 500})])
    expected = 1 - 2 * math.sqrt(0.25 / (2 * math.pi * 1000))
    assert aggregation.confidence == pytest.approx(expected)
    deterministic = aggregate([BackendCounts("a", {"0101": 1000})])
    assert deterministic.confidence == 1.0
    every_outcome_once = aggregate([BackendCounts("a", {format(i, "04b"): 1 for i in range(16)})])
    assert every_outcome_once.confidence == 0.0  # Good-Turing: all the mass may lie on unseen outcomes
    some_once = aggregate([BackendCounts("a", {"00": 500, "11": 498, "01": 1, "10": 1})])
    spread = sum(math.sqrt(p * (1 - p) / (2 * math.pi * 1000)) for p in (0.5, 0.498, 0.001, 0.001))
    assert some_once.confidence == pytest.approx(1 - spread - 2 / 1000)


def test_confidence_combines_pairwise_agreement_and_sampling_error():
    found = [BackendCounts("a", {"0": 600, "1": 400}), BackendCounts("b", {"0": 400, "1": 600})]
    aggregation = aggregate(found)
    h = hellinger_distance({"0": 0.6, "1": 0.4}, {"0": 0.4, "1": 0.6})
    shot_noise = 0.5 * 2 * (1 - 0.5) * (1 / 1000 + 1 / 1000) / 4  # both outcomes have mean probability 0.5
    sampling = 2 * math.sqrt(0.25 / (2 * math.pi * 2000))
    assert aggregation.confidence == pytest.approx((1 - math.sqrt(h**2 - shot_noise)) * (1 - sampling))


def test_agreement_forgives_the_distance_that_shot_noise_alone_explains():
    import numpy as np

    rng = np.random.default_rng(7)
    truth = rng.dirichlet(np.ones(256))
    keys = [format(i, "08b") for i in range(256)]
    found = [
        BackendCounts(f"b{i}", {k: int(c) for k, c in zip(keys, rng.multinomial(20_000, truth), strict=True) if c})
        for i in range(5)
    ]
    aggregation = aggregate(found)
    assert min(w.distance for w in aggregation.weights) > 0.02  # visibly different samples ...
    assert aggregation.confidence > 0.9  # ... of one distribution


def test_divergence_failure_lists_every_distance():
    found = [
        BackendCounts("a", {"0": 95, "1": 5}),
        BackendCounts("b", {"0": 94, "1": 6}),
        BackendCounts("c", {"0": 1, "1": 99}),
    ]
    with pytest.raises(errors.AggregationFailed) as failure:
        aggregate(found, "weighted_average", max_divergence=0.3)
    message = failure.value.message
    assert "max_divergence=0.3" in message
    assert "c=0." in message and "a=0." in message and "b=0." in message
    assert failure.value.metadata["distances"].count("=") == 3
    assert DEFAULT_MAX_DIVERGENCE == 0.5


def test_largest_remainder_ties_go_to_the_earlier_bitstring():
    import numpy as np

    assert largest_remainder(np.array([0.5, 0.5]), 3).tolist() == [2, 1]
    assert largest_remainder(np.array([1, 1, 1]) / 3, 100).tolist() == [34, 33, 33]
    assert largest_remainder(np.array([0.1, 0.2, 0.7]), 10).tolist() == [1, 2, 7]
    aggregation = aggregate([BackendCounts("a", {"1": 1, "0": 1})], shots=3)
    assert aggregation.counts == {"0": 2, "1": 1}


def test_wide_registers_are_compared_as_strings():
    wide = "1" * 40 + "0" * 30
    found = [BackendCounts("a", {wide: 10, "0" * 70: 10}), BackendCounts("b", {wide: 12, "0" * 70: 8})]
    assert aggregate(found, shots=20).counts == {"0" * 70: 9, wide: 11}


def test_hellinger_helpers():
    assert hellinger_distance({"0": 1}, {"1": 5}) == 1.0
    assert hellinger_distance({"0": 2, "1": 2}, {"0": 0.5, "1": 0.5}) == 0.0
    assert hellinger_fidelity({"00": 1}, {"00": 1, "11": 1}) == pytest.approx(0.5)
    assert hellinger_distance([0.5, 0.5], [1.0, 0.0]) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))
    with pytest.raises(errors.InvalidArgument):
        hellinger_distance([0, 0], [1, 0])


def test_the_catalogue_describes_the_maths_and_parameters():
    assert list(METHODS) == ["weighted_average", "majority_vote", "confidence_weighted", "median"]
    for info in METHODS.values():
        assert "p(x) =" in info.description or "p(x)" in info.description
        assert "confidence = A * (1 - eps)" in info.description
        assert {name for name, _, _ in info.parameters} >= {"counts", "shots", "max_divergence", "mitigate"}
    assert "fidelity" in {name for name, _, _ in METHODS["weighted_average"].parameters}


def test_a_failure_caused_by_too_few_shots_says_so():
    import numpy as np

    rng = np.random.default_rng(0)
    truth = rng.dirichlet(np.ones(1 << 12))
    keys = [format(i, "012b") for i in range(1 << 12)]
    found = [
        BackendCounts(f"b{i}", {keys[j]: int(c) for j, c in enumerate(rng.multinomial(1024, truth)) if c})
        for i in range(3)
    ]
    with pytest.raises(errors.AggregationFailed) as failure:
        aggregate(found)
    assert "shot noise alone puts a result about" in failure.value.message
    assert "run more shots" in failure.value.message
