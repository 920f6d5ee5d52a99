"""The six strategies choose as the spec's table says, from the candidates' live figures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qnet_common import errors
from services.aggregator.domain.aggregation import METHODS
from services.scheduler.domain.jobs import batch_status
from services.scheduler.domain.requests import validate_request
from services.scheduler.domain.strategies import STRATEGIES, Candidate, choose


def cand(name, position, *, wait=0.0, fidelity=0.9, cost=1.0, status="online", runnable=True, note="", refusal=""):
    return Candidate(name, status, position, wait, fidelity, cost, runnable, note, refusal)


CANDIDATES = [
    cand("ionq_simulator", 0, wait=3.0, fidelity=1.0, cost=0.0),
    cand("ibm_brisbane", 1, wait=0.5, fidelity=0.93, cost=4.8),
    cand("rigetti_aspen", 2, wait=9.0, fidelity=0.81, cost=0.66),
]


@pytest.mark.parametrize(
    ("strategy", "first", "metric"),
    [
        ("fastest", "ibm_brisbane", "estimated_wait_s"),
        ("best_fidelity", "ionq_simulator", "estimated_success_probability"),
        ("cost_optimized", "ionq_simulator", "estimated_cost_usd"),
        ("ordered", "ionq_simulator", "position"),
        ("round_robin", "ionq_simulator", "position"),
    ],
)
def test_each_strategy_picks_by_its_own_figure(strategy, first, metric):
    selection = choose(strategy, CANDIDATES)
    assert selection.order[0] == first
    assert selection.metric == metric
    assert selection.reason.startswith(first)
    assert {s.backend for s in selection.scores} == {c.backend for c in CANDIDATES}


def test_failover_order_follows_the_ranking():
    assert choose("fastest", CANDIDATES).order == ("ibm_brisbane", "ionq_simulator", "rigetti_aspen")
    assert choose("cost_optimized", CANDIDATES[1:]).order == ("rigetti_aspen", "ibm_brisbane")


def test_all_runs_every_eligible_backend_in_listed_order():
    assert choose("all", CANDIDATES).order == ("ionq_simulator", "ibm_brisbane", "rigetti_aspen")


def test_backends_not_online_or_too_small_are_skipped_and_scored_ineligible():
    candidates = [
        cand("a", 0, wait=0.0, status="maintenance"),
        cand("b", 1, wait=5.0, runnable=False, note="CIRCUIT_TOO_LARGE: 5 qubits > 2"),
        cand("c", 2, wait=9.0),
    ]
    selection = choose("fastest", candidates)
    assert selection.order == ("c",)
    notes = {s.backend: s.note for s in selection.scores if not s.eligible}
    assert notes == {"a": "backend is maintenance", "b": "CIRCUIT_TOO_LARGE: 5 qubits > 2"}


def test_no_eligible_backend_is_no_backends_with_every_reason():
    with pytest.raises(errors.NoBackends) as raised:
        choose("fastest", [cand("a", 0, status="offline"), cand("b", 1, status="maintenance")])
    assert "a: backend is offline" in raised.value.message and "b: backend is maintenance" in raised.value.message


def test_a_circuit_every_online_backend_refuses_is_that_400_not_no_backends():
    too_large = "CIRCUIT_TOO_LARGE: the circuit acts on 24 qubits; ibm_brisbane simulates at most 20"
    candidates = [cand("ibm_brisbane", 0, runnable=False, note=too_large, refusal="CIRCUIT_TOO_LARGE"),
                  cand("rigetti_aspen", 1, status="maintenance")]
    with pytest.raises(errors.CircuitTooLarge) as raised:
        choose("fastest", candidates)
    assert raised.value.http_status == 400 and "simulates at most 20" in raised.value.message


def test_a_refusal_with_another_backend_merely_offline_is_still_the_circuits_fault_only_when_all_online_refuse():
    candidates = [cand("a", 0, runnable=False, note="UNSUPPORTED_INSTRUCTION: if", refusal="UNSUPPORTED_INSTRUCTION"),
                  cand("b", 1, runnable=False, note="busy")]  # online, not runnable, not the circuit's fault
    with pytest.raises(errors.NoBackends):
        choose("fastest", candidates)


def test_an_unknown_strategy_is_invalid_strategy_naming_the_valid_ones():
    with pytest.raises(errors.InvalidStrategy) as raised:
        validate_request("OPENQASM 2.0;", [], "cheapest", 10, False, "", tuple(METHODS))
    assert "cost_optimized" in raised.value.message and raised.value.http_status == 400


@given(st.integers(min_value=0, max_value=10_000))
def test_round_robin_visits_every_eligible_backend_evenly(start):
    picks = [choose("round_robin", CANDIDATES, start + turn).order[0] for turn in range(30)]
    assert {picks.count(c.backend) for c in CANDIDATES} == {10}


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1), st.floats(0, 50)), min_size=1, max_size=8))
def test_the_choice_is_optimal_for_its_metric(figures):
    candidates = [cand(f"b{i}", i, wait=w, fidelity=f, cost=c) for i, (w, f, c) in enumerate(figures)]
    by_name = {c.backend: c for c in candidates}
    assert by_name[choose("fastest", candidates).order[0]].estimated_wait_s == min(w for w, _, _ in figures)
    assert by_name[choose("best_fidelity", candidates).order[0]].success_probability == max(f for _, f, _ in figures)
    assert by_name[choose("cost_optimized", candidates).order[0]].cost == min(c for _, _, c in figures)


def test_request_validation_fills_defaults_and_rejects_bad_fields():
    request = validate_request("OPENQASM 2.0;", ["a", "a", "b"], "", 0, False, "", tuple(METHODS))
    assert (request.strategy, request.shots, request.backends) == ("fastest", 1024, ("a", "b"))
    with pytest.raises(errors.InvalidShots):
        validate_request("OPENQASM 2.0;", [], "fastest", -1, False, "", tuple(METHODS))
    with pytest.raises(errors.InvalidAggregationMethod):
        validate_request("OPENQASM 2.0;", [], "all", 10, True, "mean", tuple(METHODS))
    with pytest.raises(errors.InvalidArgument):
        validate_request("OPENQASM 2.0;", [], "fastest", 10, True, "", tuple(METHODS))
    with pytest.raises(errors.InvalidQasm):
        validate_request("  ", [], "fastest", 10, False, "", tuple(METHODS))


@pytest.mark.parametrize(("statuses", "expected"), [
    (["completed", "completed"], "completed"),
    (["completed", "failed"], "failed"),
    (["queued", "queued"], "queued"),
    (["completed", "queued"], "running"),
    (["failed", "running"], "running"),
    (["cancelled", "completed"], "cancelled"),
])
def test_a_batch_status_follows_its_jobs(statuses, expected):
    assert batch_status(statuses) == expected


def test_strategies_declare_what_running_them_needs():
    """The engine asks the strategy, never its name: a shared turn for round_robin, a fan-out for all."""
    assert [name for name, s in STRATEGIES.items() if s.shared_turn] == ["round_robin"]
    assert [name for name, s in STRATEGIES.items() if s.fan_out] == ["all"]
    assert STRATEGIES["all"].runs(("a", "b")) == ("a", "b") and STRATEGIES["fastest"].runs(("a", "b")) == ("a",)


def test_aggregation_methods_are_the_aggregators_and_are_asked_only_when_needed():
    # A method the aggregator lists is accepted though the scheduler has no list of its own ...
    request = validate_request("OPENQASM 2.0;", [], "all", 10, True, "trimmed_mean", ("trimmed_mean",))
    assert request.aggregation_method == "trimmed_mean"
    # ... a request that does not aggregate needs no list; one that does, with the aggregator unreachable, is the
    # retryable UNAVAILABLE rather than a wrong 400.
    assert validate_request("OPENQASM 2.0;", [], "all", 10, False, "", ()).aggregation_method == "weighted_average"
    with pytest.raises(errors.Unavailable):
        validate_request("OPENQASM 2.0;", [], "all", 10, True, "median", ())
