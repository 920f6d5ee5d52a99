"""One plan for submissions and estimates: what a job would run on, what it costs and what the quota reserves."""

from __future__ import annotations

from services.scheduler.domain.jobs import JobRequest
from services.scheduler.domain.planning import candidates_of, plan_of
from services.scheduler.domain.ports import Assessment, DeviceInfo

KNOWN = [DeviceInfo("a", "online", 5, 3.0, 1000), DeviceInfo("b", "online", 5, 1.0, 1000),
         DeviceInfo("c", "maintenance", 5, 0.0, 1000)]
ASSESSED = {"a": Assessment("a", True, "", 2.0, 0.1, 0.9), "b": Assessment("b", True, "", 5.0, 0.1, 0.8),
            "c": Assessment("c", True, "", 1.0, 0.1, 0.99)}


def plan(strategy: str):
    request = JobRequest("OPENQASM 2.0;", ("a", "b", "c"), strategy, 100)
    return plan_of(request, candidates_of(request, KNOWN, ASSESSED), ASSESSED)


def test_a_plan_runs_the_strategys_pick_and_costs_what_it_runs():
    fastest = plan("fastest")
    assert fastest.runs == ("b",) and fastest.total_cost == 5.0
    cheapest = plan("cost_optimized")  # c is cheaper but in maintenance
    assert cheapest.runs == ("a",) and cheapest.total_cost == 2.0
    assert [c.eligible for c in cheapest.candidates] == [True, True, False]


def test_a_fan_out_plan_runs_every_eligible_backend_and_reserves_for_each():
    everything = plan("all")
    assert everything.runs == ("a", "b") and everything.total_cost == 7.0
    assert everything.shots_needed == 300  # every runnable backend's shots are reserved
    assert plan("fastest").shots_needed == 100 and plan("fastest").cost_needed == 5.0  # the dearest failover
