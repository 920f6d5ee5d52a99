"""The six load-balancing strategies of the spec, each an object that ranks the candidates by their live figures
and declares what running it needs: a turn of a rotation shared by every replica, or every backend at once.

Adding a strategy is one entry in STRATEGIES (and its tests): the engine, validation, estimates and the docs'
value lists read the objects, never a strategy's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qnet_common import errors
from services.scheduler.domain.jobs import Score, Selection


@dataclass(frozen=True)
class Candidate:
    """A backend as the strategies see it at decision time."""

    backend: str
    status: str
    #: Listed position (0-based) in the request, or in the network's order when none were listed.
    position: int
    estimated_wait_s: float
    #: From the circuit compiled for this backend and its current calibration.
    success_probability: float
    cost: float
    runnable: bool
    note: str = ""
    #: The documented 400 code when the backend refuses the circuit itself (too large, unsupported).
    refusal: str = ""

    @property
    def eligible(self) -> bool:
        return self.status == "online" and self.runnable

    @property
    def why_not(self) -> str:
        if self.status != "online":
            return f"backend is {self.status}"
        return self.note


@dataclass(frozen=True)
class Strategy:
    """How one strategy ranks the eligible candidates: the first is run, the rest are its failovers."""

    name: str
    #: The figure it ranks by, as reported in the selection's scores.
    metric: str
    score: Callable[[Candidate], float]
    #: Sort key over the eligible candidates (ties go to the listed position).
    order: Callable[[Candidate], tuple]
    #: Why the first was chosen, in words.
    reason: str
    #: It takes the next turn of a rotation shared by every replica (the caller passes the turn to rank()).
    shared_turn: bool = False
    #: It runs every eligible candidate at once (and may aggregate them), not the first with failovers.
    fan_out: bool = False
    #: The reason names the chosen backend's figure (meaningless for listed-order strategies).
    names_figure: bool = True

    def rank(self, eligible: list[Candidate], turn: int = 0) -> tuple[list[Candidate], str]:
        ranked = sorted(eligible, key=self.order)
        reason = self.reason
        if self.shared_turn:
            start = turn % len(ranked)
            ranked = ranked[start:] + ranked[:start]
            reason = f"turn {turn} of the rotation over {len(ranked)} eligible backends"
        return ranked, reason

    def runs(self, order: tuple[str, ...]) -> tuple[str, ...]:
        """The backends a job runs on when nothing fails: every one for a fan-out, else the first."""
        return order if self.fan_out else order[:1]


def _position(c: Candidate) -> float:
    return float(c.position)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("fastest", "estimated_wait_s", lambda c: c.estimated_wait_s, lambda c: (c.estimated_wait_s, c.position),
             "lowest estimated queue time"),
    Strategy("best_fidelity", "estimated_success_probability", lambda c: c.success_probability,
             lambda c: (-c.success_probability, c.position),
             "highest estimated success probability for this circuit on the current calibration"),
    Strategy("round_robin", "position", _position, lambda c: (c.position,), "", shared_turn=True, names_figure=False),
    Strategy("cost_optimized", "estimated_cost_usd", lambda c: c.cost, lambda c: (c.cost, c.position),
             "lowest estimated cost"),
    Strategy("ordered", "position", _position, lambda c: (c.position,), "first eligible backend in the listed order",
             names_figure=False),
    Strategy("all", "position", _position, lambda c: (c.position,), "every eligible backend", fan_out=True,
             names_figure=False),
)}


def strategy_named(name: str) -> Strategy:
    """The strategy, or the documented INVALID_STRATEGY naming the ones there are."""
    found = STRATEGIES.get(name)
    if found is None:
        raise errors.InvalidStrategy(f"unknown strategy {name!r}; use one of: {', '.join(STRATEGIES)}",
                                     strategy=str(name))
    return found


def choose(strategy: str, candidates: list[Candidate], turn: int = 0) -> Selection:
    """Orders the eligible candidates by the strategy; the first is run, the rest are its failovers.

    Raises NoBackends when no candidate is online and able to run the circuit; when every online candidate
    refuses the circuit itself, raises that refusal instead (a 400: the circuit must change, not the timing).
    `turn` is the shared rotation's turn, for a strategy that takes one (Strategy.shared_turn).
    """
    chosen_strategy = strategy_named(strategy)
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        reasons = "; ".join(f"{c.backend}: {c.why_not}" for c in candidates) or "no backends listed"
        online = [c for c in candidates if c.status == "online"]
        if online and all(c.refusal for c in online):
            raise errors.from_code(online[0].refusal, f"no backend can run this circuit ({reasons})")
        raise errors.NoBackends(f"no backend can run this job ({reasons})")
    ranked, reason = chosen_strategy.rank(eligible, turn)
    chosen = ranked[0]
    if chosen_strategy.names_figure:
        reason = f"{chosen.backend}: {reason} ({chosen_strategy.metric}={chosen_strategy.score(chosen):.6g})"
    elif not chosen_strategy.fan_out:
        reason = f"{chosen.backend}: {reason}"
    scores = tuple(Score(c.backend, float(chosen_strategy.score(c)), c.eligible, "" if c.eligible else c.why_not)
                   for c in candidates)
    return Selection(strategy, chosen_strategy.metric, reason, tuple(c.backend for c in ranked), scores)
