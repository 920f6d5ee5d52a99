"""Jobs: what a user asked for, their lifecycle and what each backend did."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from qnet_common import errors

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

DEFAULT_SHOTS = 1024
MAX_SHOTS = 100_000
#: The longest lists a request may carry: backends of a job, circuits of a batch.
MAX_BACKENDS = 32
MAX_BATCH_CIRCUITS = 100
#: The API's default for a request's aggregation_method (the aggregator owns the list of methods).
DEFAULT_AGGREGATION_METHOD = "weighted_average"


def new_job_id() -> str:
    return f"net_job_{secrets.token_hex(6)}"


def new_batch_id() -> str:
    return f"net_batch_{secrets.token_hex(6)}"


def batch_status(statuses: list[str]) -> str:
    """A batch is running while any job is, completed when all completed, failed when some failed, else
    cancelled."""
    present = set(statuses)
    if present & {QUEUED, RUNNING}:
        return RUNNING if present - {QUEUED} else QUEUED
    if present <= {COMPLETED}:
        return COMPLETED
    return FAILED if FAILED in present else CANCELLED


@dataclass(frozen=True)
class JobRequest:
    """A validated request: what to run, where, and how."""

    qasm: str
    backends: tuple[str, ...]
    strategy: str
    shots: int
    aggregate: bool = False
    aggregation_method: str = DEFAULT_AGGREGATION_METHOD

    def to_dict(self) -> dict:
        return {
            "qasm": self.qasm, "backends": list(self.backends), "strategy": self.strategy, "shots": self.shots,
            "aggregate": self.aggregate, "aggregation_method": self.aggregation_method,
        }

    @classmethod
    def from_dict(cls, data: dict) -> JobRequest:
        return cls(
            qasm=data["qasm"], backends=tuple(data["backends"]), strategy=data["strategy"], shots=data["shots"],
            aggregate=data.get("aggregate", False),
            aggregation_method=data.get("aggregation_method", DEFAULT_AGGREGATION_METHOD),
        )


def check_batch_size(circuits: int) -> None:
    """A batch carries 1 to MAX_BATCH_CIRCUITS circuits."""
    if circuits == 0:
        raise errors.InvalidArgument("field 'circuits' is empty: send at least one circuit")
    if circuits > MAX_BATCH_CIRCUITS:
        raise errors.InvalidArgument(
            f"field 'circuits' has {circuits} circuits: at most {MAX_BATCH_CIRCUITS} per batch; split it")


@dataclass
class BackendRun:
    """One backend's part of a job."""

    backend: str
    status: str = QUEUED
    counts: dict[str, int] = field(default_factory=dict)
    queue_time_s: float = 0.0
    execution_time_s: float = 0.0
    compiled_depth: int = 0
    two_qubit_gates: int = 0
    attempts: int = 0
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class Score:
    backend: str
    score: float
    eligible: bool
    note: str = ""


@dataclass(frozen=True)
class Selection:
    """Why the strategy chose what it chose: the ordered backends to try and every candidate's score."""

    strategy: str
    metric: str
    reason: str
    order: tuple[str, ...]
    scores: tuple[Score, ...]


@dataclass
class Outcome:
    """What running a job produced; written once, by the worker holding the job's lease."""

    status: str
    backend: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    runs: list[BackendRun] = field(default_factory=list)
    selection: Selection | None = None
    aggregated_counts: dict[str, int] = field(default_factory=dict)
    aggregation_confidence: float = 0.0
    aggregation_method: str = ""
    error_code: str = ""
    error_message: str = ""
    queue_time_s: float = 0.0
    execution_time_s: float = 0.0
    cost: float = 0.0


@dataclass
class Job:
    job_id: str
    owner: str
    request: JobRequest
    status: str
    created_at: float
    batch_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    outcome: Outcome | None = None
    #: Candidates' assessments taken at submission (cost, success probability, runnable).
    assessments: dict[str, dict] = field(default_factory=dict)
    #: Set by a claim of a job some earlier claim took too (its scheduler died, drained or lost the database): that
    #: one may have submitted device tasks, which this claim looks for before submitting any.
    claimed_before: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


#: A job claimed this many times without finishing (its schedulers kept dying) is failed, not retried forever.
MAX_CLAIMS = 3


def abandoned(claims: int) -> Outcome | None:
    """The outcome of a job its schedulers took `claims` times without finishing: failed once that reaches
    MAX_CLAIMS (a job that kills its scheduler must not take down every replica in turn), else None."""
    if claims < MAX_CLAIMS:
        return None
    return Outcome(status=FAILED, error_code="INTERNAL",
                   error_message=f"job abandoned: its scheduler stopped {claims} times while running it")
