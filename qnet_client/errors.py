"""The documented error codes as exceptions: one class per code, all made from one table.

Every error carries the documented `code`, the HTTP `status` and the server's `message`. A code this client does
not know yet still raises a `QnetError` with that code, so a newer server never breaks an older client.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorSpec(NamedTuple):
    code: str
    status: int
    name: str
    #: Retrying the same request a moment later may succeed (with the same Idempotency-Key for submissions).
    retryable: bool
    description: str


#: The README's "Errors" table, plus the transient BACKEND_UNAVAILABLE the scheduler may hand back.
ERRORS: tuple[ErrorSpec, ...] = (
    ErrorSpec("NO_BACKENDS", 503, "NoBackends", False, "no listed backend is online and able to run the circuit"),
    ErrorSpec("ALL_BACKENDS_FAILED", 503, "AllBackendsFailed", False, "every backend tried failed"),
    ErrorSpec("AGGREGATION_FAILED", 500, "AggregationFailed", False, "results too divergent to combine"),
    ErrorSpec("INVALID_STRATEGY", 400, "InvalidStrategy", False, "unknown strategy"),
    ErrorSpec("BACKEND_NOT_FOUND", 404, "BackendNotFound", False, "unknown backend id"),
    ErrorSpec("QUOTA_EXCEEDED", 403, "QuotaExceeded", False, "the key's daily shot or cost budget would be exceeded"),
    ErrorSpec("UNAUTHENTICATED", 401, "Unauthenticated", False, "missing or unknown API key"),
    ErrorSpec("INVALID_ARGUMENT", 400, "InvalidArgument", False, "malformed JSON, unknown field, wrong type"),
    ErrorSpec("INVALID_QASM", 400, "InvalidQasm", False, "the circuit does not parse"),
    ErrorSpec("CIRCUIT_TOO_LARGE", 400, "CircuitTooLarge", False, "beyond the device or qnet's reading limits"),
    ErrorSpec("INVALID_SHOTS", 400, "InvalidShots", False, "shots out of range"),
    ErrorSpec("UNSUPPORTED_INSTRUCTION", 400, "UnsupportedInstruction", False, "an instruction the device cannot run"),
    ErrorSpec("INVALID_AGGREGATION_METHOD", 400, "InvalidAggregationMethod", False, "unknown aggregation method"),
    ErrorSpec("INVALID_COUNTS", 400, "InvalidCounts", False, "bad aggregation input"),
    ErrorSpec("JOB_NOT_FOUND", 404, "JobNotFound", False, "unknown job or batch, or another key's"),
    ErrorSpec("JOB_ALREADY_FINISHED", 409, "JobAlreadyFinished", False, "cancelling a finished job"),
    ErrorSpec("PERMISSION_DENIED", 403, "PermissionDenied", False, "a key calling an RPC its class may not"),
    ErrorSpec("UNAVAILABLE", 503, "Unavailable", True, "the service cannot be reached right now; retry shortly"),
    ErrorSpec("BACKEND_UNAVAILABLE", 503, "BackendUnavailable", True, "a backend could not take the task right now"),
    ErrorSpec("WATCHER_TOO_SLOW", 429, "WatcherTooSlow", True, "an event watcher fell behind; resume with since"),
    ErrorSpec("INTERNAL", 500, "Internal", False, "a bug in the service; it is logged"),
)

SPECS: dict[str, ErrorSpec] = {spec.code: spec for spec in ERRORS}
RETRYABLE_CODES: frozenset[str] = frozenset(spec.code for spec in ERRORS if spec.retryable)


class QnetError(Exception):
    """A documented error answered by qnet (or a transport failure, code `CONNECTION_ERROR`, status 0)."""

    code: str = "UNKNOWN"
    status: int = 0
    retryable: bool = False
    #: The job a failure belongs to, when the server names it (ALL_BACKENDS_FAILED on POST /execute...).
    job_id: str | None = None

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.status == 0 else f"{self.code} ({self.status}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class ConnectionFailed(QnetError):
    """The service could not be reached, or the connection broke before an answer (always retryable)."""

    code = "CONNECTION_ERROR"
    retryable = True


class WaitTimeout(QnetError, TimeoutError):
    """`wait()` ran out of time before the job reached a terminal state; the job goes on."""

    code = "WAIT_TIMEOUT"
    #: The job as last read (a qnet_client.models.Job).
    job = None


def _make(spec: ErrorSpec) -> type[QnetError]:
    doc = f"{spec.code} (HTTP {spec.status}): {spec.description}."
    return type(spec.name, (QnetError,), {
        "__doc__": doc, "__module__": __name__, "code": spec.code, "status": spec.status, "retryable": spec.retryable,
    })


CLASSES: dict[str, type[QnetError]] = {spec.code: _make(spec) for spec in ERRORS}
globals().update({cls.__name__: cls for cls in CLASSES.values()})


def error_for(code: str, status: int | None, message: str) -> QnetError:
    """The exception for an answer's code (status None: the table's); an unknown code gives a plain QnetError
    carrying it, retryable when its status is 502, 503 or 504."""
    cls = CLASSES.get(code)
    if cls is None:
        error = QnetError(message, code=code or "UNKNOWN", status=status or 0)
        error.retryable = status in (502, 503, 504)
        return error
    return cls(message) if status is None else cls(message, status=status)


__all__ = ["CLASSES", "ERRORS", "RETRYABLE_CODES", "ConnectionFailed", "ErrorSpec", "QnetError", "WaitTimeout",
           "error_for", *(spec.name for spec in ERRORS)]
