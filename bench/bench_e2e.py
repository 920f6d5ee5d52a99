"""The mesh end to end through real Envoy against the in-process vendor SDK call, side by side in one run.

Rows (each beside its in-process baseline where one exists, and the issue's target):
  1. REST overhead at concurrency 1 (POST /execute, Bell, 1024 shots, waiting for completion) on
     local_simulator and ionq_simulator, against Aer's and Braket's own call and against qnet's device object
     in-process, which splits the overhead into device emulation and mesh;
  2. a second identical compile (`assess`, and the IBM devices' `_compile`) on every device object;
  3. accept rate: `return_immediately` submissions from 16 keep-alive connections; Envoy's floor beside it;
  4. completed jobs per second with 16 concurrent clients against the sequential in-process loop;
  5. GET /status, /backends and /execute/{id} with 16 connections;
  6. strategy `all` over three backends against the slowest one alone;
  7. WebSocket fan-out (bench_stream.fan_out): submission to each subscriber's update;
  8. store scale: accept rate and GET /execute/{id} on a fresh store and after inserting many finished jobs,
     and each service's memory.
Plus a sweep of latency percentiles against concurrency per device (the plot).

    .venv/bin/python bench/bench_e2e.py --quick       # a check that it works (about 2 minutes)
    .venv/bin/python bench/bench_e2e.py               # the benchmark (SQLite)
    .venv/bin/python bench/bench_e2e.py --full --postgres --profile scheduler

Writes bench/results/e2e.json, e2e.md and e2e.png (and flame-SERVICE-ROW.svg with --profile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen"), str(ROOT / "bench")]
warnings.filterwarnings("ignore")

import loadgen  # noqa: E402
import psutil  # noqa: E402
from bench_stream import fan_out  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from qnet_common.db import Database  # noqa: E402
from qnet_common.pgserver import Server  # noqa: E402
from services.backends.adapters.registry import DEVICE_IDS, PROVIDERS, build_devices, provider_of  # noqa: E402
from services.backends.domain.qasm import parse  # noqa: E402
from tests.e2e.conftest import DEV_KEY, RunningMesh, start_mesh, stop_mesh  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BELL = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
SHOTS = 1024
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
#: The devices of the overhead rows and the sweep, each with its vendor SDK's own call.
SDK_OF = {"local_simulator": "Aer: AerSimulator().run(qc, shots=1024).result()",
          "ionq_simulator": 'Braket: LocalSimulator("braket_sv").run(circuit, shots=1024).result()'}
#: Strategy `all` runs on these three; the slowest of them alone is its baseline.
ALL_BACKENDS = ("local_simulator", "ionq_simulator", "rigetti_aspen")
THROUGHPUT_CLIENTS = 16
#: No injected faults, every device online: the e2e tests' mesh otherwise slows local_simulator on purpose.
MESH_ENV = {"QNET_LOG_LEVEL": "WARNING", "QNET_FAULTS": "", "QNET_DEVICE_STATUS": ""}
SERVICES = ("scheduler", "network", *(f"backends-{p}" for p in PROVIDERS), "aggregator", "gateway")


@dataclass(frozen=True)
class Params:
    #: In-process samples per call (the baselines) and per repeat compile.
    repeats: int
    #: Concurrency levels of the sweep (16 among them: the throughput row) and seconds at each.
    levels: tuple[int, ...]
    level_s: float
    #: Seconds of the accept-rate row, of each GET route, and of each store-scale measurement.
    accept_s: float
    get_s: float
    store_s: float
    subscribers: int
    ws_jobs: int
    store_jobs: int
    #: How long to wait for the queue to drain after an accept-rate run.
    drain_s: float


MODES = {
    "quick": Params(repeats=15, levels=(1, 4, 16), level_s=2, accept_s=3, get_s=2, store_s=2, subscribers=20,
                    ws_jobs=3, store_jobs=2_000, drain_s=60),
    "default": Params(repeats=200, levels=(1, 2, 4, 8, 16, 32), level_s=8, accept_s=10, get_s=6, store_s=6,
                      subscribers=500, ws_jobs=20, store_jobs=10_000, drain_s=240),
}
MODES["full"] = replace(MODES["default"], store_jobs=100_000)


@dataclass
class Row:
    name: str
    store: str
    value: dict
    baseline: dict | None
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""
    #: The figures the markdown table shows (the JSON has them all in value and baseline).
    shown: str = ""
    shown_baseline: str = ""


def stats(samples: list[float]) -> dict:
    """Seconds in, milliseconds and calls per second out."""
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * loadgen.percentile(ordered, 99), "jobs_per_s": len(ordered) / sum(ordered)}


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: imports, JIT-ish caches, the simulator's first allocation
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


# --- in-process ----------------------------------------------------------------------------------------------


def in_process(params: Params) -> dict[str, dict]:
    """The vendor SDKs' own calls and qnet's device objects, one call after another in this process."""
    from braket.circuits import Circuit
    from braket.devices import LocalSimulator
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    aer = AerSimulator()
    braket = LocalSimulator("braket_sv")
    bell = Circuit().h(0).cnot(0, 1)
    found = {"sdk:local_simulator": stats(timed(lambda: aer.run(qc, shots=SHOTS).result(), params.repeats)),
             "sdk:ionq_simulator": stats(timed(lambda: braket.run(bell, shots=SHOTS).result(), params.repeats))}
    for device_id, device in build_devices(ALL_BACKENDS).items():
        found[f"device:{device_id}"] = stats(timed(lambda d=device: d.run(parse(BELL), SHOTS), params.repeats))
    return found


def repeat_compile(params: Params) -> list[Row]:
    """A second identical compile on every device object: `assess` (validate and compile, no run) of a fresh
    reading of the same text, against the first; and the IBM devices' transpile cache (`_compile`) alone."""
    rows = []
    for device_id, device in build_devices(DEVICE_IDS).items():
        started = time.perf_counter()
        device.assess(parse(BELL), SHOTS)
        first_ms = 1000 * (time.perf_counter() - started)
        repeats = []
        for _ in range(params.repeats):
            circuit = parse(BELL)
            started = time.perf_counter()
            device.assess(circuit, SHOTS)
            repeats.append(time.perf_counter() - started)
        value = {"assess_repeat_ms": 1000 * statistics.median(repeats)}
        shown = f"assess {value['assess_repeat_ms']:.3f} ms"
        if device_id.startswith("ibm_"):
            circuit = parse(BELL)
            value["compile_repeat_ms"] = 1000 * statistics.median(
                timed(lambda d=device, c=circuit: d._compile(c, SHOTS), params.repeats))
            shown += f" (of which the cached transpile {value['compile_repeat_ms']:.3f} ms)"
        rows.append(Row(f"repeat compile: {device_id} (second identical assess, in-process, median)", "-", value,
                        {"assess_first_ms": first_ms}, value["assess_repeat_ms"] / first_ms, "< 1 ms",
                        value["assess_repeat_ms"] < 1.0, "ratio = repeat / first", shown,
                        f"first assess {first_ms:.3f} ms"))
    return rows


# --- the mesh ------------------------------------------------------------------------------------------------


def processes(mesh: RunningMesh) -> dict[str, psutil.Process]:
    """The mesh's services (and Envoy) by name, from the launcher's children: a backends adapter service as
    backends-PROVIDER, by the devices it serves."""
    found = {}
    for child in psutil.Process(mesh.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(child.cmdline())
            if "services." in cmdline and ".main" in cmdline:
                name = cmdline.split("services.")[-1].split(".main")[0]
                if name == "backends":
                    name += "-" + provider_of(child.environ()["QNET_DEVICES"].split(",")[0])
                found[name] = child
            elif "envoy" in cmdline:
                found["envoy"] = child
    return found


def rss_mib(mesh: RunningMesh) -> dict[str, float]:
    found = {}
    for name, process in processes(mesh).items():
        with contextlib.suppress(psutil.Error):
            found[name] = process.memory_info().rss / (1 << 20)
    return found


def cpu_s(found: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds (user and system) each process has used so far."""
    seconds = {}
    for name, process in found.items():
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[name] = times.user + times.system
    return seconds


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], ok: int) -> dict[str, float]:
    """Each process's CPU milliseconds per successful request between the two readings (where it used any)."""
    return {name: round((after[name] - before[name]) * 1000 / max(1, ok), 2) for name in before
            if name in after and after[name] > before[name]}


def wait_idle(mesh: RunningMesh, timeout_s: float) -> float:
    """Seconds until no job is queued or running (the last run's backlog), at most `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        reply = mesh.request("GET", "/status")
        if reply.status == 200 and reply.body["data"]["active_jobs"] == 0:
            break
        time.sleep(0.25)
    return time.monotonic() - started


@contextlib.contextmanager
def profiled(mesh: RunningMesh, service: str | None, row: str, seconds: float) -> Iterator[None]:
    """py-spy on one service's process for the row's duration: bench/results/flame-SERVICE-ROW.svg."""
    if not service:
        yield
        return
    spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
    out = RESULTS / f"flame-{service}-{row}.svg"
    pid = processes(mesh)[service].pid
    # --nonblocking: reading the stacks without pausing the process needs no ptrace stop (refused in containers)
    recorder = subprocess.Popen([spy, "record", "--nonblocking", "-o", str(out), "--pid", str(pid), "--duration",
                                 str(max(1, round(seconds)))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        _, err = recorder.communicate(timeout=seconds + 60)
        print(f"  py-spy: {out.relative_to(ROOT)}" if recorder.returncode == 0 else f"  py-spy failed: {err[-300:]}",
              flush=True)


def execute_body(backends: tuple[str, ...] | list[str], **extra) -> dict:
    return {"qasm": BELL, "backends": list(backends), "shots": SHOTS, **extra}


def load(mesh: RunningMesh, path: str, *, method: str = "GET", body: object = None, connections: int,
         seconds: float) -> loadgen.Load:
    return loadgen.run(mesh.url + path, method=method, body=body, headers=AUTH, connections=connections,
                       duration_s=seconds)


def brief(result: loadgen.Load) -> dict:
    """A load's figures for a row: ok answers per second, percentiles, and any answer that was not a 200."""
    found = {"ok_per_s": result.ok_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
             "requests": result.requests}
    bad = {code: n for code, n in result.codes.items() if code != "200"}
    if bad or result.failures:
        found["not_200"] = bad | ({"transport": result.failures} if result.failures else {})
    return found


def shown_load(result: loadgen.Load, unit: str = "req/s") -> str:
    bad = sum(n for code, n in result.codes.items() if code != "200") + result.failures
    return (f"{result.ok_per_s:,.0f} {unit}, p50 {result.p50_ms:.1f} / p99 {result.p99_ms:.1f} ms"
            + (f", {bad} not 200" if bad else ""))


def sweep(mesh: RunningMesh, params: Params, store: str, profile: str | None) -> list[dict]:
    """Blocking POST /execute at each concurrency level, per device: latency percentiles and jobs per second."""
    points = []
    services = processes(mesh)
    for connections in params.levels:  # both devices at one level, then the next: concurrency 1 comes first
        for device in SDK_OF:
            wait_idle(mesh, params.drain_s)
            row = "throughput" if device == "local_simulator" and connections == THROUGHPUT_CLIENTS else ""
            before = cpu_s(services)
            with profiled(mesh, profile if row else None, row, params.level_s):
                result = load(mesh, "/execute", method="POST", body=execute_body([device]),
                              connections=connections, seconds=params.level_s)
            points.append({"store": store, "device": device, **result.as_dict(),
                           "cpu_ms_per_job": cpu_ms_per_request(before, cpu_s(services), result.ok)})
            print(f"  {device} c={connections}: {result.ok_per_s:.1f} jobs/s p50 {result.p50_ms:.1f} ms "
                  f"p99 {result.p99_ms:.1f} ms {result.codes}", flush=True)
    return points


def overhead_rows(points: list[dict], base: dict[str, dict], store: str) -> list[Row]:
    rows = []
    for device, sdk in SDK_OF.items():
        rest = next(p for p in points if p["device"] == device and p["connections"] == 1)
        vendor, ours = base[f"sdk:{device}"], base[f"device:{device}"]
        overhead = rest["p50_ms"] - vendor["p50_ms"]
        rows.append(Row(
            f"REST overhead at concurrency 1: {device}", store,
            {"rest_p50_ms": rest["p50_ms"], "rest_p99_ms": rest["p99_ms"], "overhead_ms": overhead,
             "device_emulation_ms": ours["p50_ms"] - vendor["p50_ms"], "mesh_ms": rest["p50_ms"] - ours["p50_ms"],
             "device_in_process_p50_ms": ours["p50_ms"]},
            {"call": sdk, "p50_ms": vendor["p50_ms"], "p99_ms": vendor["p99_ms"]},
            rest["p50_ms"] / vendor["p50_ms"], "overhead (REST p50 - SDK p50) <= 5 ms", overhead <= 5.0,
            "ratio = REST p50 / SDK p50",
            f"REST p50 {rest['p50_ms']:.1f} / p99 {rest['p99_ms']:.1f} ms; overhead {overhead:.1f} ms ="
            f" device emulation {ours['p50_ms'] - vendor['p50_ms']:.1f} + mesh {rest['p50_ms'] - ours['p50_ms']:.1f}",
            f"{sdk.split(':')[0]} in-process p50 {vendor['p50_ms']:.2f} / p99 {vendor['p99_ms']:.2f} ms"))
    for device in SDK_OF:
        rest = next(p for p in points if p["device"] == device and p["connections"] == THROUGHPUT_CLIENTS)
        vendor = base[f"sdk:{device}"]
        ratio = rest["ok_per_s"] / vendor["jobs_per_s"]
        targeted = device == "local_simulator"
        rows.append(Row(
            f"completed jobs/s, {THROUGHPUT_CLIENTS} clients: {device}", store,
            {"jobs_per_s": rest["ok_per_s"], "p50_ms": rest["p50_ms"], "p99_ms": rest["p99_ms"]},
            {"call": "sequential in-process loop of the SDK call", "jobs_per_s": vendor["jobs_per_s"],
             "device_object_jobs_per_s": base[f"device:{device}"]["jobs_per_s"]},
            ratio, ">= 30% of in-process" if targeted else "", ratio >= 0.3 if targeted else None,
            "ratio = REST jobs/s / in-process SDK loop jobs/s",
            f"{rest['ok_per_s']:.1f} jobs/s (p50 {rest['p50_ms']:.0f} / p99 {rest['p99_ms']:.0f} ms)",
            f"SDK loop {vendor['jobs_per_s']:.1f} jobs/s; qnet device object"
            f" {base[f'device:{device}']['jobs_per_s']:.1f}"))
    return rows


def strategy_all_row(mesh: RunningMesh, params: Params, store: str) -> Row:
    """Strategy `all` and each of its backends alone, at concurrency 1, in alternation (two rounds of half the
    level's time each), so that a change in the machine's load falls on both sides."""
    bodies = {device: execute_body([device]) for device in ALL_BACKENDS}
    bodies["all"] = execute_body(ALL_BACKENDS, strategy="all")
    runs: dict[str, list[loadgen.Load]] = {name: [] for name in bodies}
    for _ in range(2):
        for name, body in bodies.items():
            wait_idle(mesh, params.drain_s)
            runs[name].append(load(mesh, "/execute", method="POST", body=body, connections=1,
                                   seconds=params.level_s / 2))
    p50 = {name: statistics.fmean(r.p50_ms for r in found) for name, found in runs.items()}
    fan = p50.pop("all")
    slowest = max(p50, key=p50.get)
    ratio = fan / p50[slowest]
    return Row(f"strategy all over {', '.join(ALL_BACKENDS)} (concurrency 1)", store,
               {"p50_ms": fan, "p99_ms": max(r.p99_ms for r in runs["all"])},
               {"slowest_single": slowest, "p50_ms": p50[slowest], "singles_p50_ms": p50}, ratio,
               "<= 1.3x the slowest single backend (p50)", ratio <= 1.3,
               "p50: mean of two alternating rounds; ratio = all p50 / slowest single p50",
               f"p50 {fan:.1f} ms", f"slowest alone: {slowest} p50 {p50[slowest]:.1f} ms"
               f" ({', '.join(f'{d} {v:.1f}' for d, v in p50.items())})")


def get_rows(mesh: RunningMesh, params: Params, job_id: str, store: str) -> list[Row]:
    rows = []
    for path in ("/status", "/backends", f"/execute/{job_id}"):
        result = load(mesh, path, connections=16, seconds=params.get_s)
        name = "/execute/{id}" if path.startswith("/execute/") else path
        rows.append(Row(f"GET {name}, 16 connections", store, brief(result), None, None,
                        ">= 1500 req/s, p99 < 50 ms", result.ok_per_s >= 1500 and result.p99_ms < 50, "",
                        shown_load(result)))
    floor = load(mesh, "/aggregate/methods", connections=16, seconds=params.get_s)
    rows.append(Row("Envoy floor: GET /aggregate/methods (a trivial RPC), 16 connections", store, brief(floor),
                    None, None, "", None, "the fastest a route through Envoy and one Python service goes here",
                    shown_load(floor)))
    return rows


def accept(mesh: RunningMesh, params: Params, seconds: float, profile: str | None = None) -> tuple[loadgen.Load, float]:
    """return_immediately submissions from 16 connections, then the seconds the backlog took to run."""
    wait_idle(mesh, params.drain_s)
    with profiled(mesh, profile, "accept", seconds):
        result = load(mesh, "/execute", method="POST", connections=16, seconds=seconds,
                      body=execute_body(["local_simulator"], return_immediately=True))
    return result, wait_idle(mesh, params.drain_s)


def accept_row(result: loadgen.Load, drained_s: float, store: str, name: str = "") -> Row:
    value = brief(result) | {"backlog_drain_s": drained_s}
    return Row(name or "accept rate: return_immediately, 16 connections (local_simulator)", store, value, None,
               None, ">= 1000 jobs/s, p99 < 50 ms", result.ok_per_s >= 1000 and result.p99_ms < 50,
               "backlog_drain_s: until the accepted jobs had all run",
               shown_load(result, "jobs/s") + f"; backlog ran in {drained_s:.1f} s more")


def ws_row(mesh: RunningMesh, params: Params, store: str) -> Row:
    """Each subscriber's update stamped as it is read off the socket (bench_stream.RawSubscriber), and for
    context, by `websockets` clients once decoded, every one behind the others' decoding in this process."""
    wait_idle(mesh, params.drain_s)
    name = f"WebSocket: {params.subscribers} subscribers, submission to each one's queued update"
    try:
        found = asyncio.run(fan_out(mesh, params.subscribers, params.ws_jobs))
        wait_idle(mesh, params.drain_s)
        decoded = asyncio.run(fan_out(mesh, params.subscribers, params.ws_jobs, raw=False))
    except (ConnectionClosed, TimeoutError, OSError) as error:
        return Row(name, store, {}, None, None, "p99 < 100 ms", False, f"failed: {error!r}", f"failed: {error!r}")
    return Row(name, store,
               {"p50_ms": found["submit_p50_ms"], "p99_ms": found["submit_p99_ms"],
                "state_change_to_message_p50_ms": found["p50_ms"], "state_change_to_message_p99_ms": found["p99_ms"],
                "messages": found["messages"], "jobs": params.ws_jobs,
                "decoded_by_websockets_clients": decoded}, None, None, "p99 < 100 ms",
               found["submit_p99_ms"] < 100, "",
               f"p50 {found['submit_p50_ms']:.1f} / p99 {found['submit_p99_ms']:.1f} ms at the socket"
               f" ({found['messages']:,} messages; state change to message p50 {found['p50_ms']:.1f} / p99"
               f" {found['p99_ms']:.1f} ms); `websockets` clients, once decoded: p50 {decoded['submit_p50_ms']:.1f}"
               f" / p99 {decoded['submit_p99_ms']:.1f} ms")


def insert_finished_jobs(db_url: str, count: int) -> float:
    """`count` copies of a finished job, in one statement (created over the past `count` seconds)."""
    db = Database(db_url)
    template = db.query("SELECT job_id FROM jobs WHERE status = 'completed' LIMIT 1")[0]["job_id"]
    numbers = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
               if db.dialect == "sqlite" else "")
    source = "n" if db.dialect == "sqlite" else "generate_series(1, ?) AS n(i)"
    started = time.perf_counter()
    with db.transaction() as tx:
        tx.execute(
            numbers + "INSERT INTO jobs (job_id, owner, status, request, request_id, batch_id, created_at, "
            "started_at, finished_at, claims, outcome, assessments, shots, cost, backend, ran_by) "
            "SELECT 'bench_' || n.i, owner, status, request, '', batch_id, created_at - n.i, started_at - n.i, "
            f"finished_at - n.i, claims, outcome, assessments, shots, cost, backend, ran_by FROM jobs, {source} "
            "WHERE jobs.job_id = ?", (count, template))
    db.close()
    return time.perf_counter() - started


@contextlib.contextmanager
def started_mesh(store: Callable[[], contextlib.AbstractContextManager[str]]) -> Iterator[tuple[RunningMesh, str]]:
    """A mesh on a store of its own (`store()` gives a PostgreSQL URL, or "" for SQLite in the data dir), and
    that store's URL."""
    with store() as url:
        data_dir = pathlib.Path(tempfile.mkdtemp(prefix="qnet-bench-e2e-"))
        mesh = start_mesh(data_dir, MESH_ENV | {"QNET_DATABASE_URL": url})
        try:
            yield mesh, url or f"sqlite:///{data_dir / 'qnet.db'}"
        except BaseException:
            print(f"bench_e2e: the mesh's logs are in {data_dir}", file=sys.stderr)
            raise
        finally:
            stop_mesh(mesh)
        shutil.rmtree(data_dir, ignore_errors=True)


def delete_inserted_jobs(db_url: str) -> None:
    db = Database(db_url)
    with db.transaction() as tx:
        tx.execute("DELETE FROM jobs WHERE substr(job_id, 1, 6) = 'bench_'")
    db.close()


def jobs_in(db_url: str) -> int:
    db = Database(db_url)
    try:
        return db.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    finally:
        db.close()


def store_rows(params: Params, store: str, fresh_store: Callable[[], contextlib.AbstractContextManager[str]]
               ) -> list[Row]:
    """A mesh on a fresh store: accept rate and GET /execute/{id}; again after `store_jobs` finished jobs were
    inserted; and again once they are deleted (fresh, grown, fresh: the baseline is the mean of the two fresh
    runs, so a change in the machine's load during the row shows as a gap between them)."""
    with started_mesh(fresh_store) as (mesh, db_url):
        job_id = mesh.request("POST", "/execute", execute_body(["local_simulator"])).body["data"]["job_id"]
        rss_before = rss_mib(mesh)
        runs: dict[str, tuple[loadgen.Load, loadgen.Load, int]] = {}

        def measure(name: str) -> None:
            accepted, _ = accept(mesh, params, params.store_s)
            read = load(mesh, f"/execute/{job_id}", connections=16, seconds=params.store_s)
            runs[name] = accepted, read, jobs_in(db_url)

        measure("fresh")
        inserted_s = insert_finished_jobs(db_url, params.store_jobs)
        wait_idle(mesh, params.drain_s)
        measure("grown")
        rss_after = rss_mib(mesh)
        delete_inserted_jobs(db_url)
        measure("fresh again")
    memory = {name: {"before_mib": rss_before.get(name), "after_mib": rss_after.get(name)} for name in rss_after}
    rows = []
    for index, what in ((0, "accept rate (return_immediately, 16 connections)"), (1, "GET /execute/{id}")):
        fresh = [runs[n][index] for n in ("fresh", "fresh again")]
        grown = runs["grown"][index]
        baseline = statistics.fmean(r.ok_per_s for r in fresh)
        ratio = grown.ok_per_s / baseline if baseline else None
        unit = "req/s" if index else "jobs/s"
        rows.append(Row(
            f"store scale: {what} with {params.store_jobs:,} more finished jobs", store,
            brief(grown) | {"jobs_in_store": runs["grown"][2]} | ({"inserted_in_s": inserted_s} if index else {}),
            {"ok_per_s": baseline, "fresh": brief(fresh[0]) | {"jobs_in_store": runs["fresh"][2]},
             "fresh_again": brief(fresh[1]) | {"jobs_in_store": runs["fresh again"][2]}},
            ratio, "within 10% of the fresh store", ratio is not None and ratio >= 0.9,
            "ratio = ok/s grown / mean of the two fresh runs",
            shown_load(grown, unit) + f" ({runs['grown'][2]:,} jobs in the store)",
            f"fresh: {fresh[0].ok_per_s:,.0f} and {fresh[1].ok_per_s:,.0f} {unit}, p99 {fresh[0].p99_ms:.1f} and"
            f" {fresh[1].p99_ms:.1f} ms"))
    rows.append(Row("store scale: resident memory per process (MiB)", store, memory, None, None, "", None,
                    "before: fresh store; after: the grown store's runs",
                    ", ".join(f"{name} {m['before_mib']:.0f} → {m['after_mib']:.0f}" for name, m in memory.items()
                              if m["before_mib"] is not None)))
    return rows


def mesh_rows(params: Params, store: str, fresh_store: Callable[[], contextlib.AbstractContextManager[str]],
              profile: str | None) -> tuple[list[Row], list[dict], dict[str, dict]]:
    """Every row on one store; the in-process baselines are measured while this mesh runs, idle, just before the
    REST runs they are compared with."""
    print(f"== the mesh on {store}", flush=True)
    rows: list[Row] = []
    with started_mesh(fresh_store) as (mesh, _):
        job_id = mesh.request("POST", "/execute", execute_body(["local_simulator"])).body["data"]["job_id"]
        wait_idle(mesh, params.drain_s)
        base = in_process(params)
        print("  in-process baselines done", flush=True)
        points = sweep(mesh, params, store, profile)
        rows += overhead_rows(points, base, store)
        rows.append(strategy_all_row(mesh, params, store))
        print("  strategy all done", flush=True)
        wait_idle(mesh, params.drain_s)
        rows += get_rows(mesh, params, job_id, store)
        print("  GET routes done", flush=True)
        rows.append(ws_row(mesh, params, store))
        print("  WebSocket done", flush=True)
        result, drained = accept(mesh, params, params.accept_s, profile)
        rows.append(accept_row(result, drained, store))
        print(f"  accept: {result.ok_per_s:.0f} jobs/s p99 {result.p99_ms:.1f} ms; drained in {drained:.1f} s",
              flush=True)
    rows += store_rows(params, store, fresh_store)
    print("  store scale done", flush=True)
    return rows, points, base


# --- output --------------------------------------------------------------------------------------------------


def machine() -> dict:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "git_head": head, "work_tree_dirty": bool(dirty),
            "load_client": "wrk" if loadgen.have_wrk() else "httpx (wrk not installed)"}


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# End to end through Envoy, against the in-process call", "",
        f"Mode `{report['mode']}`" + (" (a check that the script works: tiny parameters, not figures to quote)"
                                       if report["mode"] == "quick" else "") +
        f"; {m['cores']} cores, load average {m['load_average_at_start'][0]:.2f} at the start and"
        f" {m['load_average_at_end'][0]:.2f} at the end; git {m['git_head'][:12]}"
        f"{' (work tree modified)' if m['work_tree_dirty'] else ''}; load from {m['load_client']};"
        f" {report['elapsed_s']:.0f} s in all. The mesh, Envoy, the load client and the in-process baselines share"
        " the machine's cores; every ratio is measured side by side in this one run. Bell circuit, 1024 shots.", "",
        "| row | store | measured | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else "-"
        baseline = row["shown_baseline"] or (fmt(row["baseline"]) if row["baseline"] else "-")
        lines.append(f"| {row['name']} | {row['store']} | {row['shown'] or fmt(row['value'])} | {baseline} | {ratio} |"
                     f" {row['target'] or '-'} | {met} |")
    lines += ["", "Blocking `POST /execute` against concurrency (closed loop; e2e.png):", "",
              "| store | device | connections | jobs/s | p50 | p90 | p99 | not 200 |",
              "|---|---|---|---|---|---|---|---|"]
    stores = list(dict.fromkeys(p["store"] for p in report["sweep"]))
    for p in sorted(report["sweep"], key=lambda p: (stores.index(p["store"]), p["device"], p["connections"])):
        bad = sum(n for code, n in p["codes"].items() if code != "200") + p["failures"]
        lines.append(f"| {p['store']} | {p['device']} | {p['connections']} | {p['ok_per_s']:.1f} |"
                     f" {p['p50_ms']:.1f} ms | {p['p90_ms']:.1f} ms | {p['p99_ms']:.1f} ms | {bad} |")
    names = list(dict.fromkeys(n for p in report["sweep"] for n in p.get("cpu_ms_per_job", {})))
    lines += ["", "CPU milliseconds per completed job, by process (the load client's not included; py-spy, when it"
              " ran, adds to the profiled service's):", "",
              "| store | device | connections | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for p in sorted(report["sweep"], key=lambda p: (stores.index(p["store"]), p["device"], p["connections"])):
        cpu = p.get("cpu_ms_per_job", {})
        lines.append(f"| {p['store']} | {p['device']} | {p['connections']} | "
                     + " | ".join(f"{cpu[n]:.2f}" if n in cpu else "-" for n in names) + " |")
    lines += ["", "In-process, one call after another (measured while that store's mesh ran idle):", "",
              "| store | call | p50 | p99 | calls/s |", "|---|---|---|---|---|"]
    for store, calls in report["in_process"].items():
        for name, s in calls.items():
            lines.append(f"| {store} | {name} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | {s['jobs_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(SDK_OF)
    figure, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.5), squeeze=False)
    styles = {"p50_ms": "-", "p90_ms": "--", "p99_ms": ":"}
    colours = {"SQLite": "tab:blue", "PostgreSQL": "tab:orange"}
    for axis, device in zip(axes[0], devices, strict=True):
        for store in dict.fromkeys(p["store"] for p in report["sweep"]):
            points = [p for p in report["sweep"] if p["device"] == device and p["store"] == store]
            x = [p["connections"] for p in points]
            for key, style in styles.items():
                axis.plot(x, [p[key] for p in points], style, marker="o", color=colours.get(store),
                          label=f"{store} {key.removesuffix('_ms')}")
        for store, calls in report["in_process"].items():
            sdk = calls[f"sdk:{device}"]["p50_ms"]
            axis.axhline(sdk, color=colours.get(store), linewidth=1, alpha=0.6,
                         label=f"{store}: in-process SDK p50 ({sdk:.1f} ms)")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(report["params"]["levels"], [str(c) for c in report["params"]["levels"]])
        axis.set_xlabel("concurrent clients (blocking POST /execute)")
        axis.set_ylabel("latency (ms)")
        axis.set_title(f"{device}: through Envoy, Bell, {SHOTS} shots")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny parameters: checks that it works (~2 min)")
    size.add_argument("--full", action="store_true", help="the default with 100,000 jobs in the store-scale row")
    parser.add_argument("--postgres", action="store_true", help="also run the mesh rows on PostgreSQL")
    parser.add_argument("--profile", choices=SERVICES, metavar="SERVICE",
                        help=f"py-spy flame graphs of one service ({', '.join(SERVICES)}) during the accept-rate"
                             " and completed-throughput rows: bench/results/flame-SERVICE-{accept,throughput}.svg")
    parser.add_argument("--store-jobs", type=int, help="finished jobs inserted in the store-scale row")
    parser.add_argument("--subscribers", type=int, help="WebSocket subscribers")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    params = MODES[mode]
    params = replace(params, store_jobs=args.store_jobs or params.store_jobs,
                     subscribers=args.subscribers or params.subscribers)
    if not loadgen.have_wrk():
        print("bench_e2e: wrk is not installed (Debian package wrk): the asyncio httpx client measures instead, and"
              " on a 2-core machine it is the bottleneck", file=sys.stderr)
    report = {"mode": mode, "params": asdict(params), "machine": machine(),
              "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    started = time.perf_counter()
    print("== repeat compile (in-process)", flush=True)
    rows = repeat_compile(params)
    found, sweep_points, base = mesh_rows(params, "SQLite", lambda: contextlib.nullcontext(""), args.profile)
    rows += found
    baselines = {"SQLite": base}
    if args.postgres:
        server = Server()
        if server.find_or_start() is None:
            print("bench_e2e: --postgres: no PostgreSQL server found or started", file=sys.stderr)
            return 1
        try:
            found, points, baselines["PostgreSQL"] = mesh_rows(params, "PostgreSQL", server.database, None)
        finally:
            server.stop()
        rows += found
        sweep_points += points
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report |= {"elapsed_s": time.perf_counter() - started, "in_process": baselines, "sweep": sweep_points,
               "rows": [asdict(r) for r in rows]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / "e2e.md").write_text(text)
    plot(report, RESULTS / "e2e.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
