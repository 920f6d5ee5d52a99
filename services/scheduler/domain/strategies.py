"""The six load-balancing strategies of the spec, as pure functions of the candidates' live figures."""

from __future__ import annotations

from dataclasses import dataclass

from qnet_common import errors
from services.scheduler.domain.jobs import Score, Selection

STRATEGIES = ("fastest", "best_fidelity", "round_robin", "cost_optimized", "ordered", "all")


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


def choose(strategy: str, candidates: list[Candidate], round_robin_turn: int = 0) -> Selection:
    """Orders the eligible candidates by the strategy; the first is run, the rest are its failovers.

    Raises NoBackends when no candidate is online and able to run the circuit; when every online candidate
    refuses the circuit itself, raises that refusal instead (a 400: the circuit must change, not the timing).
    """
    if strategy not in STRATEGIES:
        raise errors.InvalidStrategy(f"unknown strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        reasons = "; ".join(f"{c.backend}: {c.why_not}" for c in candidates) or "no backends listed"
        online = [c for c in candidates if c.status == "online"]
        if online and all(c.refusal for c in online):
            raise errors.from_code(online[0].refusal, f"no backend can run this circuit ({reasons})")
        raise errors.NoBackends(f"no backend can run this job ({reasons})")

    if strategy == "fastest":
        metric, key = "estimated_wait_s", lambda c: c.estimated_wait_s
        ranked = sorted(eligible, key=lambda c: (c.estimated_wait_s, c.position))
        reason = "lowest estimated queue time"
    elif strategy == "best_fidelity":
        metric, key = "estimated_success_probability", lambda c: c.success_probability
        ranked = sorted(eligible, key=lambda c: (-c.success_probability, c.position))
        reason = "highest estimated success probability for this circuit on the current calibration"
    elif strategy == "cost_optimized":
        metric, key = "estimated_cost_usd", lambda c: c.cost
        ranked = sorted(eligible, key=lambda c: (c.cost, c.position))
        reason = "lowest estimated cost"
    elif strategy == "round_robin":
        metric, key = "position", lambda c: float(c.position)
        ordered = sorted(eligible, key=lambda c: c.position)
        turn = round_robin_turn % len(ordered)
        ranked = ordered[turn:] + ordered[:turn]
        reason = f"turn {round_robin_turn} of the rotation over {len(ordered)} eligible backends"
    else:  # ordered and all
        metric, key = "position", lambda c: float(c.position)
        ranked = sorted(eligible, key=lambda c: c.position)
        reason = "first eligible backend in the listed order" if strategy == "ordered" else "every eligible backend"

    chosen = ranked[0]
    if strategy not in ("all", "round_robin", "ordered"):
        reason = f"{chosen.backend}: {reason} ({metric}={key(chosen):.6g})"
    elif strategy != "all":
        reason = f"{chosen.backend}: {reason}"
    scores = tuple(Score(c.backend, float(key(c)), c.eligible, "" if c.eligible else c.why_not) for c in candidates)
    return Selection(strategy, metric, reason, tuple(c.backend for c in ranked), scores)
