"""Planning a job: the candidates a request names, as the network stands, and what its strategy would pick.

One plan serves a submission (its checks, its quota charge) and POST /estimate (the same plan, nothing run), so
the two never disagree about what a job would run on or cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.scheduler.domain.jobs import JobRequest, Selection
from services.scheduler.domain.ports import Assessment, DeviceInfo
from services.scheduler.domain.strategies import Candidate, Strategy, choose, strategy_named


def candidates_of(request: JobRequest, known: Sequence[DeviceInfo],
                  assessments: dict[str, Assessment]) -> list[Candidate]:
    """The request's backends (every known one when it names none) with their live figures."""
    by_id = {d.backend: d for d in known}
    names = list(request.backends) or [d.backend for d in known]
    result = []
    for position, name in enumerate(names):
        info = by_id.get(name)
        found = assessments.get(name)
        result.append(Candidate(
            backend=name,
            status=info.status if info else "offline",
            position=position,
            estimated_wait_s=info.estimated_wait_s if info else 0.0,
            success_probability=found.success_probability if found else 0.0,
            cost=found.cost if found else 0.0,
            runnable=bool(found and found.runnable and info),
            note=(found.reason if found else "not assessed") if not (found and found.runnable) else "",
            refusal=found.refusal_code if found else "",
        ))
    return result


@dataclass(frozen=True)
class Plan:
    """A request's candidates and its strategy's selection over them."""

    request: JobRequest
    candidates: tuple[Candidate, ...]
    assessments: dict[str, Assessment]
    selection: Selection

    @property
    def strategy(self) -> Strategy:
        return strategy_named(self.request.strategy)

    @property
    def runs(self) -> tuple[str, ...]:
        """The backends the job runs on when none fails."""
        return self.strategy.runs(self.selection.order)

    @property
    def total_cost(self) -> float:
        return sum(self.assessments[b].cost for b in self.runs)

    @property
    def shots_needed(self) -> int:
        """What the quota reserves: every runnable backend's shots for a fan-out, else one backend's."""
        if self.strategy.fan_out:
            return self.request.shots * max(1, sum(1 for a in self.assessments.values() if a.runnable))
        return self.request.shots

    @property
    def cost_needed(self) -> float:
        """What the quota reserves: every runnable backend for a fan-out, else the dearest failover."""
        costs = [a.cost for a in self.assessments.values() if a.runnable]
        if not costs:
            return 0.0
        return sum(costs) if self.strategy.fan_out else max(costs)


def plan_of(request: JobRequest, candidates: list[Candidate], assessments: dict[str, Assessment],
            turn: int = 0) -> Plan:
    """Raises what choose() raises: NO_BACKENDS, or the circuit's own refusal when every backend refuses it."""
    return Plan(request, tuple(candidates), assessments, choose(request.strategy, candidates, turn))
