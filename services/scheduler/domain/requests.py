"""What a user may ask for: the fields of a submission or an estimate, checked once for every entry point."""

from __future__ import annotations

from collections.abc import Collection

from qnet_common import errors
from services.scheduler.domain.jobs import (
    DEFAULT_AGGREGATION_METHOD,
    DEFAULT_SHOTS,
    MAX_BACKENDS,
    MAX_SHOTS,
    JobRequest,
)
from services.scheduler.domain.strategies import STRATEGIES, strategy_named


def validate_request(
    qasm: str, backends: list[str], strategy: str, shots: int, aggregate: bool = False,
    aggregation_method: str = "", methods: Collection[str] = (), *, default_strategy: str = "fastest",
) -> JobRequest:
    """Checks the fields a user sends; raises the documented 400 errors with what to change.

    `methods` are the aggregation methods the aggregator offers (it owns the list; Aggregator.methods()); they
    are needed only when the request aggregates or names a method, and empty when the aggregator could not be
    asked: then such a request is the retryable UNAVAILABLE, never a wrong refusal.
    """
    chosen = strategy_named(strategy or default_strategy)
    if not qasm.strip():
        raise errors.InvalidQasm("field 'qasm' is empty: send an OpenQASM 2.0 or 3.0 circuit")
    if shots < 0 or shots > MAX_SHOTS:
        raise errors.InvalidShots(f"shots={shots} is out of range: send 1 to {MAX_SHOTS} (0 means {DEFAULT_SHOTS})")
    method = aggregation_method or DEFAULT_AGGREGATION_METHOD
    if aggregate or aggregation_method:
        if not methods:
            raise errors.Unavailable("the aggregator cannot be reached to check aggregation_method; retry shortly")
        if method not in methods:
            raise errors.InvalidAggregationMethod(
                f"unknown aggregation_method {method!r}; use one of: {', '.join(methods)}")
    if aggregate and not chosen.fan_out:
        fan_outs = [name for name, s in STRATEGIES.items() if s.fan_out]
        raise errors.InvalidArgument(
            f"aggregate=true needs a strategy that runs every backend ({', '.join(fan_outs)}): aggregation "
            "combines several backends")
    if len(backends) > MAX_BACKENDS:
        raise errors.InvalidArgument(
            f"field 'backends' lists {len(backends)} backends: at most {MAX_BACKENDS} (GET /backends lists them)")
    unique = tuple(dict.fromkeys(backends))
    return JobRequest(qasm, unique, chosen.name, shots or DEFAULT_SHOTS, aggregate, method)

