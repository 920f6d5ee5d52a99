"""Network-wide status from the backends' live statuses and the active jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OPERATIONAL, DEGRADED, OUTAGE = "operational", "degraded", "outage"


@dataclass(frozen=True)
class BackendLine:
    id: str
    status: str
    queue_depth: int
    num_qubits: int


@dataclass(frozen=True)
class NetworkStatus:
    overall_status: str
    total_capacity: int
    active_jobs: int
    backends: tuple[BackendLine, ...]


def overall(backends: Sequence[BackendLine], backends_reachable: bool = True) -> str:
    """`outage` when no backend is online (or the backends cannot be reached), `degraded` when some backend
    is offline or in maintenance, `operational` when every backend is online."""
    if not backends_reachable or not any(b.status == "online" for b in backends):
        return OUTAGE
    if any(b.status != "online" for b in backends):
        return DEGRADED
    return OPERATIONAL


def network_status(backends: Sequence[BackendLine], active_jobs: int, backends_reachable: bool = True) -> NetworkStatus:
    """`total_capacity` is the number of qubits the network can run on now: the sum over online backends."""
    return NetworkStatus(
        overall_status=overall(backends, backends_reachable),
        total_capacity=sum(b.num_qubits for b in backends if b.status == "online"),
        active_jobs=active_jobs,
        backends=tuple(backends),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])
