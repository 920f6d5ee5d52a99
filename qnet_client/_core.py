"""What the sync and asyncio clients share, without I/O: configuration, the routes, reading an answer, the retry
policy and the stream's resume cursor. Each piece is pure, so it is tested without sockets."""

from __future__ import annotations

import json
import os
import random
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qnet_client import models
from qnet_client.errors import ConnectionFailed, QnetError, error_for

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v2/network"
#: Longer than the server's own wait in POST /execute (QNET_EXECUTE_WAIT_S, 30 s by default).
DEFAULT_TIMEOUT_S = 90.0
TOPICS = ("job_updates", "backend_status")
#: Close codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = {4001: "UNAUTHENTICATED", 4004: "INVALID_ARGUMENT"}
_JOB_IN_MESSAGE = re.compile(r"\(job (net_job_[0-9a-zA-Z_]+)\)")


def from_environment(*names: str, env: Mapping[str, str] | None = None) -> str:
    """The value of the first of `names` set to something in `env` (default os.environ), else "": the one place
    the client package reads its environment (Config, the gRPC client and the CLI go through it)."""
    env = os.environ if env is None else env
    return next((env[name] for name in names if env.get(name)), "")


@dataclass(frozen=True)
class Config:
    """The API's base URL (ending in /api/v2/network) and the key."""

    base_url: str
    api_key: str

    @classmethod
    def resolve(cls, url: str | None = None, api_key: str | None = None, env: dict[str, str] | None = None) -> Config:
        """Arguments first, then QNET_URL and QNET_API_KEY (or QCOS_API_KEY, as the spec's examples use)."""
        url = url or from_environment("QNET_URL", env=env) or DEFAULT_URL
        key = api_key or from_environment("QNET_API_KEY", "QCOS_API_KEY", env=env)
        return cls(base_url(url), key)

    @property
    def stream_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/stream"


def base_url(url: str) -> str:
    """`http://host:8080`, `http://host:8080/` and `http://host:8080/api/v2/network` all name the same API."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"QNET_URL must be an http:// or https:// URL, got {url!r}")
    path = parsed.path.rstrip("/")
    if not path.endswith(API_PREFIX):
        path += API_PREFIX
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def segment(value: str) -> str:
    """One path segment (an id), escaped."""
    if not value:
        raise ValueError("an id must not be empty")
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class Call:
    """One REST call: what to send and how to read the answer's `data`."""

    method: str
    path: str
    result: Any = None
    body: dict | None = None
    #: Sent as the Idempotency-Key header (submissions), the same on every retry.
    idempotency_key: str = ""

    def headers(self, api_key: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "qnet-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        if self.idempotency_key:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def payload(self) -> bytes | None:
        return None if self.body is None else json.dumps(self.body).encode()


def new_idempotency_key() -> str:
    return f"qnetc-{uuid.uuid4().hex}"


def read_answer(call: Call, status: int, raw: bytes) -> Any:
    """The typed `data` of a success, or the documented error as an exception."""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("success") is True and 200 <= status < 300:
        return models.from_json(call.result, body.get("data")) if call.result is not None else body.get("data")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code"):
        raise with_job(error_for(str(error["code"]), status, str(error.get("message", ""))))
    text = raw[:300].decode(errors="replace").strip()
    # Something other than the envelope (a proxy in between, an HTML page): name it by its status.
    code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
            504: "UNAVAILABLE"}.get(status, f"HTTP_{status}")
    raise error_for(code, status, f"unexpected answer (HTTP {status}): {text or 'empty body'}")


def with_job(error: QnetError) -> QnetError:
    """Failures of an accepted job name it in the message: keep its id on the exception (`job_id`)."""
    match = _JOB_IN_MESSAGE.search(error.message)
    error.job_id = match.group(1) if match else None
    return error


def connection_error(error: BaseException) -> ConnectionFailed:
    return ConnectionFailed(f"could not reach qnet: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for transient failures.

    Retried: connection errors and answers whose code is retryable (UNAVAILABLE, BACKEND_UNAVAILABLE: 503).
    Every route is safe to retry: reads and cancels are idempotent, estimates and aggregations compute, and
    submissions carry one Idempotency-Key for all their attempts, so the server returns the same job.
    """

    attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    #: No retry starts later than this after the first attempt.
    budget_s: float = 60.0

    def delay(self, error: QnetError, attempt: int, elapsed_s: float, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1), or None: give up and raise."""
        if not error.retryable or attempt >= self.attempts:
            return None
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        wait = cap * (0.5 + 0.5 * (rng or random).random())
        return None if elapsed_s + wait > self.budget_s else wait


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass
class StreamCursor:
    """Where a watch is in the event log, so a reconnect resumes after the last event seen and misses nothing.

    A first subscription with `since=0` follows from now on. If it breaks before any event arrived, resuming
    "from now on" could lose what happened meanwhile, so it replays from the log's start and drops the events
    stamped before the first subscription (less a margin for clock skew: at worst an event is seen twice
    around that moment, never lost).
    """

    since: int = 0
    topics: tuple[str, ...] = TOPICS
    job_id: str | None = None
    subscribed_at: float | None = None
    reconnects: int = 0
    skew_margin_s: float = 2.0
    _replaying_from_start: bool = field(default=False, repr=False)

    def subscribe_message(self, api_key: str) -> str:
        since = self.since
        if since == 0 and self.subscribed_at is not None:
            since, self._replaying_from_start = 1, True
        return json.dumps({"api_key": api_key, "subscribe": list(self.topics), "since": since})

    def on_subscribed(self, now: float) -> None:
        if self.subscribed_at is None:
            self.subscribed_at = now

    def accept(self, message: dict) -> models.Event | None:
        """The event to hand to the caller, or None (a duplicate, another job, a protocol message)."""
        kind = message.get("type")
        if kind == "error":
            code = str(message.get("code", "INTERNAL"))
            raise error_for(code, None, str(message.get("message", "")))
        if kind not in ("job_update", "backend_status"):
            return None
        event_id = int(message.get("event_id") or 0)
        if event_id and event_id <= self.since:
            return None
        if event_id:
            self.since = event_id
        if self._replaying_from_start and self.subscribed_at is not None:
            stamp = _timestamp(message.get("timestamp", ""))
            if stamp is not None and stamp < self.subscribed_at - self.skew_margin_s:
                return None
        if self.job_id is not None and message.get("job_id") != self.job_id:
            return None
        return models.from_json(models.Event, message)


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    except (ValueError, TypeError):
        return None


def close_error(code: int | None, reason: str) -> QnetError | None:
    """The error a close code means when reconnecting cannot help (a bad key), else None (reconnect)."""
    if code in FATAL_CLOSE_CODES:
        return error_for(FATAL_CLOSE_CODES[code], 401 if code == 4001 else 400,
                         f"the stream closed the connection ({code}): {reason or 'no reason given'}")
    return None


def poll_delays(start_s: float = 0.1, factor: float = 1.5, cap_s: float = 1.0):  # a generator
    """Intervals between reads of a job in `wait()`: quick at first, then once a second."""
    delay = start_s
    while True:
        yield delay
        delay = min(cap_s, delay * factor)
