"""Typed results: one dataclass per message of the REST API, read from its JSON with `from_json`.

Field names are the API's. Fields a newer server adds are ignored; fields an older one leaves out take their
defaults, so the client keeps working across versions.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: Job and batch states after which nothing changes.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def from_json(cls: type[T], data: Any) -> T:  # JSON is any
    """Builds `cls` (a dataclass, a list[...] or dict[...] of them, or a scalar) from decoded JSON."""
    return _convert(cls, data)


def _convert(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _convert(options[0], value)
    if origin is list:
        (item,) = typing.get_args(kind)
        return [_convert(item, v) for v in value or ()]
    if origin is dict:
        _, item = typing.get_args(kind)
        return {str(k): _convert(item, v) for k, v in (value or {}).items()}
    if dataclasses.is_dataclass(kind):
        if value is None:
            return None
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        return kind(**{k: _convert(hints[k], v) for k, v in value.items() if k in known})
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)  # proto3 JSON may print 64-bit integers as strings
    return value


def to_json(obj: Any) -> Any:
    """Plain JSON values of a result (for `--json` and for logging)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


# --- jobs --------------------------------------------------------------------------------------------------

@dataclass
class JobError:
    code: str = ""
    message: str = ""


@dataclass
class BackendRun:
    backend: str = ""
    status: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    queue_time_s: float = 0.0
    execution_time_s: float = 0.0
    compiled_depth: int = 0
    two_qubit_gates: int = 0
    attempts: int = 0
    error: JobError | None = None


@dataclass
class BackendScore:
    backend: str = ""
    score: float = 0.0
    eligible: bool = False
    note: str = ""


@dataclass
class Selection:
    strategy: str = ""
    metric: str = ""
    reason: str = ""
    scores: list[BackendScore] = field(default_factory=list)


@dataclass
class Job:
    job_id: str = ""
    status: str = ""
    strategy: str = ""
    backend: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    queue_time_s: float = 0.0
    execution_time_s: float = 0.0
    results: list[BackendRun] = field(default_factory=list)
    aggregated_counts: dict[str, int] = field(default_factory=dict)
    aggregation_confidence: float = 0.0
    aggregation_method: str = ""
    shots: int = 0
    backends: list[str] = field(default_factory=list)
    selection: Selection | None = None
    error: JobError | None = None
    batch_id: str = ""
    created_at: str = ""
    finished_at: str = ""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def best_counts(self) -> dict[str, int]:
        """The aggregated counts when the job aggregated, else the counts of the backend that ran."""
        return self.aggregated_counts or self.counts


@dataclass
class Batch:
    batch_id: str = ""
    status: str = ""
    jobs: list[Job] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES or (bool(self.jobs) and all(j.done for j in self.jobs))


# --- backends ----------------------------------------------------------------------------------------------

@dataclass
class CouplingEdge:
    control: int = 0
    target: int = 0


@dataclass
class Price:
    per_task: float = 0.0
    per_shot: float = 0.0
    per_second: float = 0.0
    currency: str = ""
    source: str = ""


@dataclass
class CalibrationSummary:
    median_t1_us: float = 0.0
    median_t2_us: float = 0.0
    mean_readout_error: float = 0.0
    mean_single_qubit_error: float = 0.0
    mean_two_qubit_error: float = 0.0
    taken_at: str = ""


@dataclass
class Backend:
    id: str = ""
    name: str = ""
    provider: str = ""
    technology: str = ""
    status: str = ""
    num_qubits: int = 0
    queue_depth: int = 0
    running: int = 0
    estimated_wait_s: float = 0.0
    avg_execution_time_s: float = 0.0
    native_gates: list[str] = field(default_factory=list)
    max_shots: int = 0
    simulator: bool = False
    noisy: bool = False
    connectivity: str = ""
    coupling_map: list[CouplingEdge] = field(default_factory=list)
    supports_classical_control: bool = False
    price: Price | None = None
    calibration: CalibrationSummary | None = None
    description: str = ""


@dataclass
class QubitCalibration:
    qubit: int = 0
    t1_us: float = 0.0
    t2_us: float = 0.0
    readout_error: float = 0.0
    prob_meas1_prep0: float = 0.0
    prob_meas0_prep1: float = 0.0


@dataclass
class GateCalibration:
    gate: str = ""
    qubits: list[int] = field(default_factory=list)
    error: float = 0.0
    duration_ns: float = 0.0


@dataclass
class Calibration:
    backend_id: str = ""
    taken_at: str = ""
    source: str = ""
    qubits: list[QubitCalibration] = field(default_factory=list)
    gates: list[GateCalibration] = field(default_factory=list)
    summary: CalibrationSummary | None = None


@dataclass
class QueuedTask:
    task_id: str = ""
    status: str = ""
    shots: int = 0
    age_s: float = 0.0


@dataclass
class QueueStatus:
    backend_id: str = ""
    queue_depth: int = 0
    running: int = 0
    concurrency: int = 0
    max_queue_depth: int = 0
    avg_execution_time_s: float = 0.0
    estimated_wait_s: float = 0.0
    completed_tasks: int = 0
    tasks: list[QueuedTask] = field(default_factory=list)


# --- network -----------------------------------------------------------------------------------------------

@dataclass
class BackendStatus:
    id: str = ""
    status: str = ""
    queue_depth: int = 0


@dataclass
class NetworkStatus:
    overall_status: str = ""
    total_capacity: int = 0
    active_jobs: int = 0
    backends: list[BackendStatus] = field(default_factory=list)


@dataclass
class Throughput:
    window_minutes: int = 0
    jobs: int = 0
    jobs_per_minute: float = 0.0


@dataclass
class BackendMetrics:
    backend: str = ""
    runs: int = 0
    success_rate: float = 0.0
    queue_time_p50_s: float = 0.0
    queue_time_p95_s: float = 0.0
    execution_time_p50_s: float = 0.0
    execution_time_p95_s: float = 0.0
    shots: int = 0


@dataclass
class NetworkMetrics:
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    throughput: list[Throughput] = field(default_factory=list)
    backends: list[BackendMetrics] = field(default_factory=list)
    shots_executed: int = 0
    cost_spent: float = 0.0
    currency: str = ""


@dataclass
class TopologyNode:
    id: str = ""
    kind: str = ""
    status: str = ""
    provider: str = ""
    num_qubits: int = 0
    connectivity: str = ""
    coupling_edges: int = 0
    address: str = ""


@dataclass
class TopologyLink:
    source: str = ""
    target: str = ""
    protocol: str = ""


@dataclass
class Topology:
    nodes: list[TopologyNode] = field(default_factory=list)
    links: list[TopologyLink] = field(default_factory=list)


@dataclass
class BackendEstimate:
    backend: str = ""
    cost: float = 0.0
    estimated_execution_s: float = 0.0
    eligible: bool = False
    note: str = ""


@dataclass
class CostEstimate:
    backends: list[BackendEstimate] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    total_cost: float = 0.0
    currency: str = ""
    strategy: str = ""
    shots: int = 0


# --- aggregation -------------------------------------------------------------------------------------------

@dataclass
class BackendWeight:
    backend: str = ""
    weight: float = 0.0
    distance: float = 0.0


@dataclass
class BackendCounts:
    backend: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class AggregationResult:
    method: str = ""
    aggregated_counts: dict[str, int] = field(default_factory=dict)
    aggregation_confidence: float = 0.0
    shots: int = 0
    backends: list[BackendWeight] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    mitigated: bool = False
    mitigated_counts: list[BackendCounts] = field(default_factory=list)


@dataclass
class MethodParameter:
    name: str = ""
    type: str = ""
    description: str = ""


@dataclass
class AggregationMethod:
    name: str = ""
    description: str = ""
    parameters: list[MethodParameter] = field(default_factory=list)


# --- the stream --------------------------------------------------------------------------------------------

@dataclass
class Event:
    """One message of the WebSocket stream: a `job_update` or a `backend_status`."""

    type: str = ""
    event_id: int = 0
    timestamp: str = ""
    status: str = ""
    job_id: str = ""
    backend: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    error_code: str = ""
    #: backend_status events: the backend's id and its queue.
    id: str = ""
    queue_depth: int = 0
