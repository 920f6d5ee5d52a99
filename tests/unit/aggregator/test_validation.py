"""Bad input gets a documented error whose message says what to fix."""

from __future__ import annotations

import pytest

from qnet_common import errors
from services.aggregator.domain.aggregation import BackendCounts, aggregate

GOOD = {"00": 10, "11": 10}


def fails(error_type, *results, **options):
    with pytest.raises(error_type) as failure:
        aggregate(list(results), **options)
    assert type(failure.value) is error_type
    return failure.value.message


def test_unknown_method_lists_the_known_ones():
    message = fails(errors.InvalidAggregationMethod, BackendCounts("a", GOOD), method="mean")
    assert "'mean'" in message
    assert "weighted_average, majority_vote, confidence_weighted, median" in message


def test_no_results():
    assert "at least one result" in fails(errors.InvalidCounts)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"0 1": 3}, "characters other than 0 and 1 (join the classical registers without spaces)"),
        ({"0x3": 3}, "send binary, not hexadecimal"),
        ({"02": 3}, "'02' has characters other than 0 and 1"),
        ({"": 3}, "empty bitstring"),
        ({3: 3}, "is not a string"),
        ({"01": 3, "1": 2}, "'01' has 2 bits, '1' has 1"),
        ({"01": -1}, "count -1 for '01' is negative"),
        ({"01": 2.5}, "count 2.5 for '01' is not an integer"),
        ({"01": "3"}, "count '3' for '01' is not an integer"),
        ({"01": None}, "count None for '01' is not an integer"),
        ({}, "has no counts"),
        ({"01": 0, "10": 0}, "sum to 0"),
    ],
)
def test_malformed_counts(counts, expected):
    assert expected in fails(errors.InvalidCounts, BackendCounts("a", counts))


def test_results_of_different_widths():
    message = fails(errors.InvalidCounts, BackendCounts("a", GOOD), BackendCounts("b", {"000": 5}))
    assert "'b' has 3-bit bitstrings but 'a' has 2-bit ones" in message


def test_counts_above_the_declared_shots():
    assert "sum to 20, more than its shots=10" in fails(errors.InvalidCounts, BackendCounts("a", GOOD, shots=10))


@pytest.mark.parametrize("fidelity", [-0.1, 1.5, float("nan"), "high"])
def test_fidelity_outside_0_1(fidelity):
    message = fails(errors.InvalidArgument, BackendCounts("a", GOOD, fidelity=fidelity))
    assert "fidelity of result 'a' must be a probability in [0, 1]" in message


def test_every_fidelity_zero():
    message = fails(errors.InvalidArgument, BackendCounts("a", GOOD, fidelity=0.0))
    assert "give at least one result a fidelity above 0" in message
    assert aggregate([BackendCounts("a", GOOD, fidelity=0.0)], "median").counts == GOOD


@pytest.mark.parametrize("shots", [0, -5, 2.5, True])
def test_bad_shots(shots):
    assert "positive integer" in fails(errors.InvalidShots, BackendCounts("a", GOOD), shots=shots)
    assert "positive integer" in fails(errors.InvalidShots, BackendCounts("a", GOOD, shots=shots))


@pytest.mark.parametrize("max_divergence", [0, -0.1, 1.5, float("nan")])
def test_bad_max_divergence(max_divergence):
    message = fails(errors.InvalidArgument, BackendCounts("a", GOOD), max_divergence=max_divergence)
    assert "max_divergence must be a Hellinger distance in (0, 1]" in message


def test_backend_names_must_be_present_and_unique():
    assert "backend name" in fails(errors.InvalidArgument, BackendCounts("", GOOD))
    assert "repeated: a" in fails(errors.InvalidArgument, BackendCounts("a", GOOD), BackendCounts("a", GOOD))


def test_readout_errors_length_must_match_the_width():
    message = fails(errors.InvalidArgument, BackendCounts("a", GOOD, readout_errors=[(0.01, 0.02)]))
    assert "1 readout_errors but 2-bit bitstrings" in message


@pytest.mark.parametrize(
    ("readout_errors", "expected"),
    [
        ([(0.01, 0.02), (1.2, 0.0)], "bit 1 (1.2, 0.0) must be probabilities in [0, 1]"),
        ([(0.01, 0.02), (0.6, 0.5)], "p(1|0) + p(0|1) = 1.1 >= 1"),
        ([(0.01, 0.02), (0.1,)], "pair of numbers"),
    ],
)
def test_readout_errors_must_be_invertible_probabilities(readout_errors, expected):
    assert expected in fails(errors.InvalidArgument, BackendCounts("a", GOOD, readout_errors=readout_errors))


def test_mitigate_needs_readout_errors_on_every_result():
    message = fails(
        errors.InvalidArgument,
        BackendCounts("a", GOOD, readout_errors=[(0.01, 0.02)] * 2),
        BackendCounts("b", GOOD),
        mitigate=True,
    )
    assert "missing for: b" in message


def test_every_error_is_a_documented_400():
    for error_type in (errors.InvalidCounts, errors.InvalidAggregationMethod, errors.InvalidShots):
        assert error_type("x").http_status == 400
    assert errors.AggregationFailed("x").http_status == 500
