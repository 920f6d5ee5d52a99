"""The one error model of qnet: every failure a user can cause is a QnetError with a documented code.

Domain code raises these; the shared gRPC interceptor turns them into a google.rpc.Status carrying one
google.rpc.ErrorInfo (reason = code), and Envoy turns that into the HTTP envelope
{"success": false, "error": {"code": ..., "message": ...}} with the status below.

This module imports no grpc: `grpc_code` is the canonical status name, mapped by the interceptor.
"""

from __future__ import annotations

from typing import ClassVar

ERROR_DOMAIN = "qnet.softquantus.com"

# Canonical gRPC status -> HTTP status, as Envoy's transcoder maps them: the one table. The Lua filter's tables
# and Envoy's local replies are generated from it (qnet_common/envoy_schema.py and envoy_config.py), docs
# and tests read it. Where statuses share an HTTP status, the first listed names an HTTP error that comes
# without the envelope (CODE_OF_HTTP_STATUS).
HTTP_STATUS_OF_GRPC = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

#: Codes only the HTTP edge answers with, no gRPC status behind them: a plain request to the WebSocket route.
HTTP_ONLY_CODES = {426: "UPGRADE_REQUIRED"}
#: The code of an HTTP error without the envelope whose status no table here names.
OTHER_4XX_CODE = "INVALID_ARGUMENT"
OTHER_5XX_CODE = "INTERNAL"
#: HTTP status -> the code of an HTTP error that comes without the envelope (Envoy's own replies, a plain-text
#: answer from an upstream): the first gRPC status with that HTTP status, or the edge's own.
CODE_OF_HTTP_STATUS = {
    **{status: next(name for name, its in HTTP_STATUS_OF_GRPC.items() if its == status)
       for status in sorted(set(HTTP_STATUS_OF_GRPC.values()))},
    **HTTP_ONLY_CODES,
}


def code_of_http_status(status: int) -> str:
    """The code of an HTTP error (status 400 or more) that came without the envelope."""
    return CODE_OF_HTTP_STATUS.get(status, OTHER_4XX_CODE if status < 500 else OTHER_5XX_CODE)


class QnetError(Exception):
    """Base of every documented error. Subclasses fix `code` (the documented reason) and `grpc_code`."""

    code: ClassVar[str] = "INTERNAL"
    grpc_code: ClassVar[str] = "INTERNAL"
    #: True when retrying the same call later may succeed (used by the scheduler's retry policy).
    transient: ClassVar[bool] = False
    #: True when the request itself is at fault (the circuit, the shots): another backend would refuse it too,
    #: so the scheduler does not fail over.
    request_at_fault: ClassVar[bool] = False

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_OF_GRPC[self.grpc_code]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


# --- the spec's table -------------------------------------------------------------------------------


class NoBackends(QnetError):
    code = "NO_BACKENDS"
    grpc_code = "UNAVAILABLE"


class AllBackendsFailed(QnetError):
    code = "ALL_BACKENDS_FAILED"
    grpc_code = "UNAVAILABLE"


class AggregationFailed(QnetError):
    code = "AGGREGATION_FAILED"
    grpc_code = "INTERNAL"


class InvalidStrategy(QnetError):
    code = "INVALID_STRATEGY"
    grpc_code = "INVALID_ARGUMENT"


class BackendNotFound(QnetError):
    code = "BACKEND_NOT_FOUND"
    grpc_code = "NOT_FOUND"


class QuotaExceeded(QnetError):
    code = "QUOTA_EXCEEDED"
    grpc_code = "PERMISSION_DENIED"


# --- beyond the table: auth, input validation, jobs ----------------------------------------------------


class Unauthenticated(QnetError):
    code = "UNAUTHENTICATED"
    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(QnetError):
    code = "PERMISSION_DENIED"
    grpc_code = "PERMISSION_DENIED"


class InvalidArgument(QnetError):
    """A request field is missing or out of range; the message names the field and what to send."""

    code = "INVALID_ARGUMENT"
    grpc_code = "INVALID_ARGUMENT"
    request_at_fault = True


class InvalidQasm(InvalidArgument):
    code = "INVALID_QASM"


class CircuitTooLarge(InvalidArgument):
    code = "CIRCUIT_TOO_LARGE"


class InvalidShots(InvalidArgument):
    code = "INVALID_SHOTS"


class UnsupportedInstruction(InvalidArgument):
    code = "UNSUPPORTED_INSTRUCTION"


class InvalidAggregationMethod(InvalidArgument):
    code = "INVALID_AGGREGATION_METHOD"


class InvalidCounts(InvalidArgument):
    code = "INVALID_COUNTS"


class JobNotFound(QnetError):
    code = "JOB_NOT_FOUND"
    grpc_code = "NOT_FOUND"


class JobAlreadyFinished(QnetError):
    code = "JOB_ALREADY_FINISHED"
    grpc_code = "ABORTED"


class Unavailable(QnetError):
    """A shared dependency (the database) cannot be reached right now; retrying shortly may succeed."""

    code = "UNAVAILABLE"
    grpc_code = "UNAVAILABLE"
    transient = True


class BackendUnavailable(QnetError):
    """A backend could not run a task right now (process down, deadline); the scheduler may retry."""

    code = "BACKEND_UNAVAILABLE"
    grpc_code = "UNAVAILABLE"
    transient = True


class BackendExecutionError(QnetError):
    """A backend accepted a task and failed it; retrying the same backend will not help."""

    code = "BACKEND_EXECUTION_ERROR"
    grpc_code = "INTERNAL"


class WatcherTooSlow(QnetError):
    """An event watcher fell too far behind the log; it resumes from its last event id."""

    code = "WATCHER_TOO_SLOW"
    grpc_code = "RESOURCE_EXHAUSTED"
    transient = True


class TaskNotFound(QnetError):
    """Internal: a backends replica does not know a task id (it restarted, or forgot the finished task)."""

    code = "TASK_NOT_FOUND"
    grpc_code = "NOT_FOUND"


class TaskCancelled(QnetError):
    code = "CANCELLED"
    grpc_code = "CANCELLED"


class Internal(QnetError):
    code = "INTERNAL"
    grpc_code = "INTERNAL"


def from_code(code: str, message: str, **metadata: object) -> QnetError:
    """The documented error of this code (Internal for a code that is not documented)."""
    return BY_CODE.get(code, Internal)(message, **metadata)


def all_error_types() -> list[type[QnetError]]:
    """Every concrete documented error type, for docs and the tests that cover each one end to end."""
    seen: list[type[QnetError]] = []
    stack = list(QnetError.__subclasses__())
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


#: Every documented code and its error type.
BY_CODE: dict[str, type[QnetError]] = {cls.code: cls for cls in all_error_types()}


def http_status_of_code() -> dict[str, int]:
    """Every code an error envelope can carry and its HTTP status: the documented ones, the bare gRPC statuses
    (an error from outside qnet's interceptor) and the edge's own."""
    return {
        **{code: HTTP_STATUS_OF_GRPC[cls.grpc_code] for code, cls in BY_CODE.items()},
        **{name: status for name, status in HTTP_STATUS_OF_GRPC.items() if name not in BY_CODE},
        **{name: status for status, name in HTTP_ONLY_CODES.items()},
    }
