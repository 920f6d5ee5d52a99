"""Closed-loop HTTP load for the benchmarks: wrk with a generated Lua script when it is installed, else an
asyncio httpx client with the same number of keep-alive connections (which, on a 2-core machine shared with
the mesh, is itself the bottleneck: results say which client measured them)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field

#: The Lua script: method, headers and body; counts answers by status; done() prints one JSON line.
WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
local threads = {{}}
setup = function(thread) table.insert(threads, thread) end
codes = {{}}
response = function(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
done = function(summary, latency, requests)
  local merged = {{}}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes")) do
      merged[tostring(status)] = (merged[tostring(status)] or 0) + count
    end
  end
  local parts = {{}}
  for status, count in pairs(merged) do table.insert(parts, string.format('"%s": %d', status, count)) end
  local e = summary.errors
  io.write(string.format('WRK_JSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "codes": {{%s}}}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
"""


@dataclass
class Load:
    """What one closed-loop run measured."""

    client: str
    connections: int
    duration_s: float
    requests: int
    #: Answers with status 200 per second.
    ok_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: Answers by HTTP status, and transport failures (connect, read, write, timeout).
    codes: dict[str, int] = field(default_factory=dict)
    failures: int = 0

    @property
    def ok(self) -> int:
        return self.codes.get("200", 0)

    def as_dict(self) -> dict:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for ASCII text


def run(url: str, *, method: str = "GET", body: object = None, headers: dict[str, str] | None = None,
        connections: int = 16, duration_s: float = 10.0, timeout_s: float = 60.0, use_wrk: bool | None = None) -> Load:
    """`connections` keep-alive connections, each sending its next request as soon as the last is answered."""
    data = json.dumps(body) if body is not None else None
    headers = dict(headers or {})
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    if use_wrk if use_wrk is not None else have_wrk():
        return _wrk(url, method, data, headers, connections, duration_s, timeout_s)
    return asyncio.run(_httpx(url, method, data, headers, connections, duration_s, timeout_s))


def _wrk(url: str, method: str, data: str | None, headers: dict[str, str], connections: int, duration_s: float,
         timeout_s: float) -> Load:
    script = WRK_SCRIPT.format(
        method=_lua(method), body=_lua(data) if data is not None else "nil",
        headers="\n".join(f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in headers.items()))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    threads = max(1, min(2, connections))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
               f"--timeout={max(1, round(timeout_s))}s", "-s", handle.name, url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    finally:
        os.unlink(handle.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    found = json.loads(line.removeprefix("WRK_JSON "))
    elapsed = found["duration_us"] / 1e6
    codes = dict(found["codes"])
    return Load("wrk", connections, elapsed, found["requests"], codes.get("200", 0) / elapsed,
                found["p50_us"] / 1000, found["p90_us"] / 1000, found["p99_us"] / 1000, found["max_us"] / 1000,
                codes, sum(found[k] for k in ("connect", "read", "write", "timeout")))


async def _httpx(url: str, method: str, data: str | None, headers: dict[str, str], connections: int,
                 duration_s: float, timeout_s: float) -> Load:
    import httpx

    latencies: list[float] = []
    codes: dict[str, int] = {}
    failures = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        started = time.perf_counter()
        deadline = started + duration_s

        async def one_connection() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    reply = await client.request(method, url, content=data, headers=headers)
                except httpx.HTTPError:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                codes[str(reply.status_code)] = codes.get(str(reply.status_code), 0) + 1

        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    if not latencies:
        return Load("httpx", connections, elapsed, 0, 0.0, 0.0, 0.0, 0.0, 0.0, codes, failures)
    return Load("httpx", connections, elapsed, len(latencies), codes.get("200", 0) / elapsed,
                1000 * statistics.median(latencies), 1000 * percentile(latencies, 90),
                1000 * percentile(latencies, 99), 1000 * latencies[-1], codes, failures)


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile of an already sorted list (nearest rank)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
