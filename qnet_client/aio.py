"""The asyncio client: the same routes as `Client`, awaited (`await client.execute(...)`), over httpx (extra
"client"), and `watch()` as an async iterator over the `websockets` package's asyncio client."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

try:
    import httpx
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("the asyncio client needs httpx: pip install 'qnet[client]'") from error

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
from qnet_client.client import RetryHook
from qnet_client.errors import JobAlreadyFinished, QnetError, WaitTimeout

log = logging.getLogger(__name__)


class AsyncClient(Routes):
    """qnet's REST API for asyncio; every route method of `Client` returns a coroutine here.

        async with AsyncClient() as client:
            job = await client.execute(qasm, ["ionq_simulator"], shots=100)
            async for event in client.watch(job_id=...): ...
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 retry: RetryPolicy | None = None, on_retry: RetryHook | None = None) -> None:
        self.config = Config.resolve(url, api_key)
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send_once(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, self.config.base_url + call.path,
                                                 content=call.payload(), headers=call.headers(self.config.api_key))
        except httpx.TransportError as error:
            raise connection_error(error) from error
        return read_answer(call, response.status_code, response.content)

    async def _call(self, call: Call) -> Any:
        started = time.monotonic()
        attempt = 0
        connection_broke = False
        while True:
            attempt += 1
            try:
                return await self._send_once(call)
            except JobAlreadyFinished:
                if call.method == "DELETE" and connection_broke:
                    job = await self._send_once(Call("GET", call.path, models.Job))
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
                await asyncio.sleep(delay)

    async def wait(self, job_id: str, timeout: float | None = 300.0,
                   on_update: Callable[[models.Job], None] | None = None) -> models.Job:
        """As `Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in poll_delays():
            job = await self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                return job
            if deadline is not None and time.monotonic() + delay > deadline:
                error = WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s; it goes on")
                error.job = job
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def watch(self, job_id: str | None = None, *, topics: Iterable[str] = TOPICS, since: int = 0,
                    max_reconnects: int | None = None, on_subscribed: Callable[[], None] | None = None,
                    ) -> AsyncIterator[models.Event]:
        """As `Client.watch`, as an async iterator."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        cursor = StreamCursor(since=since, topics=tuple(topics), job_id=job_id)
        url = self.config.stream_url
        failures = 0
        while True:
            try:
                async with connect(url, open_timeout=10, proxy=None) as ws:
                    await ws.send(cursor.subscribe_message(self.config.api_key))
                    async for raw in ws:
                        message = json.loads(raw)
                        if not isinstance(message, dict):
                            continue
                        if message.get("type") == "subscribed":
                            cursor.on_subscribed(time.time())
                            failures = 0
                            if on_subscribed is not None:
                                on_subscribed()
                            continue
                        event = cursor.accept(message)
                        if event is not None:
                            yield event
                    raise ConnectionClosed(ws.close_rcvd, ws.close_sent)
            except ConnectionClosed as closed:
                code, text = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
                fatal = close_error(code, text)
                if fatal is not None:
                    raise fatal from closed
                reason = f"closed {code or 'abruptly'}"
            except (OSError, InvalidHandshake, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}"
            failures += 1
            cursor.reconnects += 1
            if max_reconnects is not None and cursor.reconnects > max_reconnects:
                raise connection_error(ConnectionError(f"stream {url} {reason}; gave up after {max_reconnects} "
                                                       "reconnects"))
            delay = min(5.0, 0.2 * 2 ** min(failures - 1, 5))
            log.info("stream reconnecting reason=%r since=%d delay_s=%.1f", reason, cursor.since, delay)
            await asyncio.sleep(delay)
