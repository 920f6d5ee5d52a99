"""The synchronous client: the standard library's HTTP, the `websockets` package's sync client for watch()."""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from qnet_client import models
from qnet_client._api import Routes
from qnet_client._core import (
    DEFAULT_TIMEOUT_S,
    TOPICS,
    Call,
    Config,
    RetryPolicy,
    StreamCursor,
    close_error,
    connection_error,
    poll_delays,
    read_answer,
)
from qnet_client.errors import JobAlreadyFinished, QnetError, WaitTimeout

log = logging.getLogger(__name__)

#: on_retry(attempt that failed, the error, seconds until the next attempt)
RetryHook = Callable[[int, QnetError, float], None]


class Client(Routes):
    """qnet's REST API from Python.

        client = Client()                      # QNET_URL, QNET_API_KEY (or QCOS_API_KEY)
        job = client.execute(qasm, ["ionq_simulator", "ibm_brisbane"], "fastest", 1024)
        job.counts
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 retry: RetryPolicy | None = None, on_retry: RetryHook | None = None) -> None:
        self.config = Config.resolve(url, api_key)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        # No proxies from the environment: the API is reached as configured.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: each call opens its own connection."""

    # --- the transport ------------------------------------------------------------------------------------

    def _send_once(self, call: Call) -> Any:
        request = urllib.request.Request(self.config.base_url + call.path, data=call.payload(), method=call.method,
                                         headers=call.headers(self.config.api_key))
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return read_answer(call, response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return read_answer(call, error.code, error.read())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise connection_error(getattr(error, "reason", None) or error) from error

    def _call(self, call: Call) -> Any:
        started = time.monotonic()
        attempt = 0
        connection_broke = False
        while True:
            attempt += 1
            try:
                return self._send_once(call)
            except JobAlreadyFinished:
                if call.method == "DELETE" and connection_broke:
                    # An earlier attempt's cancel may have landed before its answer was lost.
                    job = self._send_once(Call("GET", call.path, models.Job))
                    if job.status == "cancelled":
                        return job
                raise
            except QnetError as error:
                delay = self.retry.delay(error, attempt, time.monotonic() - started)
                if delay is None:
                    raise
                connection_broke = connection_broke or error.code == "CONNECTION_ERROR"
                log.info("retrying method=%s path=%s attempt=%d code=%s delay_s=%.2f", call.method, call.path,
                         attempt, error.code, delay)
                if self.on_retry is not None:
                    self.on_retry(attempt, error, delay)
                time.sleep(delay)

    # --- waiting and watching -----------------------------------------------------------------------------

    def wait(self, job_id: str, timeout: float | None = 300.0,
             on_update: Callable[[models.Job], None] | None = None) -> models.Job:
        """Reads the job until it is completed, failed or cancelled; WaitTimeout (the job goes on) after
        `timeout` seconds (None: no limit). `on_update` sees every read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in poll_delays():
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                return job
            if deadline is not None and time.monotonic() + delay > deadline:
                error = WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s; it goes on")
                error.job = job
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable")

    def watch(self, job_id: str | None = None, *, topics: Iterable[str] = TOPICS, since: int = 0,
              max_reconnects: int | None = None, on_subscribed: Callable[[], None] | None = None,
              ) -> Iterator[models.Event]:
        """Events from the WebSocket stream, for ever (break out of the loop to stop): `since=0` follows from
        now on, `since=N` replays after event N first. A broken connection is resumed with `since` = the last
        event id seen, so nothing is missed and nothing is repeated. `job_id` keeps that job's events only.
        `on_subscribed()` runs each time the stream confirms a subscription (an exception it raises ends the
        watch): for example, read the job once, in case it ended before the subscription."""
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        cursor = StreamCursor(since=since, topics=tuple(topics), job_id=job_id)
        url = self.config.stream_url
        failures = 0
        while True:
            try:
                with connect(url, open_timeout=10, proxy=None) as ws:
                    ws.send(cursor.subscribe_message(self.config.api_key))
                    while True:
                        message = _json_object(ws.recv())
                        if message.get("type") == "subscribed":
                            cursor.on_subscribed(time.time())
                            failures = 0
                            if on_subscribed is not None:
                                on_subscribed()
                            continue
                        event = cursor.accept(message)
                        if event is not None:
                            yield event
            except ConnectionClosed as closed:
                fatal = close_error(closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd
                                    else "")
                if fatal is not None:
                    raise fatal from closed
                reason = f"closed {closed.rcvd.code if closed.rcvd else 'abruptly'}"
            except (OSError, InvalidHandshake, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}"
            failures += 1
            cursor.reconnects += 1
            if max_reconnects is not None and cursor.reconnects > max_reconnects:
                raise connection_error(ConnectionError(f"stream {url} {reason}; gave up after "
                                                       f"{max_reconnects} reconnects"))
            delay = min(5.0, 0.2 * 2 ** min(failures - 1, 5))
            log.info("stream reconnecting reason=%r since=%d delay_s=%.1f", reason, cursor.since, delay)
            time.sleep(delay)


def _json_object(raw: str | bytes) -> dict:
    message = json.loads(raw)
    return message if isinstance(message, dict) else {}
