"""The `qnet` command as a user runs it: the installed console script in a subprocess against the running mesh,
its real output and its exit codes."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import select
import subprocess
import sys
import time

import pytest

from qnet_client import cli
from tests.e2e.conftest import DEV_KEY, FAULTY_DEVICE, MAINTENANCE_DEVICE, ROOT, SLOW_DEVICE
from tests.e2e.test_slice import BELL

QNET = pathlib.Path(sys.executable).parent / "qnet"  # installed by `make setup` (pyproject's console_scripts)


def env_for(mesh, key: str | None = DEV_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QNET_", "QCOS_"))}
    env.update(QNET_URL=mesh.url.removesuffix("/api/v2/network"), QNET_DATA_DIR=str(mesh.data_dir))
    if key is not None:
        env["QCOS_API_KEY"] = key  # the spec's variable works as well as QNET_API_KEY
    return env


def qnet(mesh, *args: str, key: str | None = DEV_KEY, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(QNET), *args], env=env_for(mesh, key), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def circuits(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("circuits")
    files = {"bell": BELL, "broken": "OPENQASM 2.0;\nqreg q[;\n",
             "ghz": 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nh q[0];\ncx q[0], q[1];\n'
                    'cx q[1], q[2];\nc = measure q;\n'}
    for name, text in files.items():
        (folder / f"{name}.qasm").write_text(text)
    return {name: folder / f"{name}.qasm" for name in files}


def test_the_console_script_is_installed_and_help_documents_the_exit_codes(single_mesh):
    assert QNET.is_file(), "run `make setup`: it installs .venv/bin/qnet"
    result = qnet(single_mesh, "--help")
    assert result.returncode == 0 and "exit codes:" in result.stdout
    for exit_code, meaning, _ in cli.EXIT_CODES:
        assert f"{exit_code:<4} {meaning}" in result.stdout


def test_execute_on_all_backends_with_aggregation_prints_histograms(single_mesh, circuits):
    result = qnet(single_mesh, "execute", str(circuits["bell"]), "--backends", "ionq_simulator,ibm_brisbane",
                  "--strategy", "all", "--aggregate", "weighted_average", "--shots", "1024")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("job net_job_") and " completed " in out.splitlines()[0]
    assert "ionq_simulator: completed" in out and "ibm_brisbane: completed" in out
    assert "aggregated (weighted_average, confidence" in out
    bars = [line.split() for line in out.splitlines() if "█" in line]
    assert {bar[0] for bar in bars} >= {"00", "11"}
    assert all(bar[-1].endswith("%") for bar in bars)
    assert result.stderr == ""  # no progress display: stderr is not a terminal here


def test_json_output_is_the_job_for_scripts(single_mesh, circuits):
    result = qnet(single_mesh, "--json", "execute", str(circuits["ghz"]), "--backends", "ionq_simulator",
                  "--shots", "300")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed" and set(job["counts"]) == {"000", "111"}
    assert sum(job["counts"].values()) == 300
    shown = json.loads(qnet(single_mesh, "jobs", "get", job["job_id"], "--json").stdout)
    assert shown["job_id"] == job["job_id"] and shown["counts"] == job["counts"]


def test_exit_codes_say_what_went_wrong(single_mesh, circuits):
    bell = str(circuits["bell"])
    wrong = qnet(single_mesh, "status", key="qnet_wrong_key")
    assert wrong.returncode == cli.AUTH and "UNAUTHENTICATED (401)" in wrong.stderr and wrong.stdout == ""
    as_json = qnet(single_mesh, "status", "--json", key="qnet_wrong_key")
    assert as_json.returncode == cli.AUTH
    assert json.loads(as_json.stdout)["error"] == {"code": "UNAUTHENTICATED", "status": 401, "exit_code": 3,
                                                   "message": json.loads(as_json.stdout)["error"]["message"]}
    assert qnet(single_mesh, "status", key=None).returncode == cli.AUTH  # no key at all
    missing = qnet(single_mesh, "backends", "no_such_backend")
    assert missing.returncode == cli.NOT_FOUND and "BACKEND_NOT_FOUND (404)" in missing.stderr
    assert qnet(single_mesh, "jobs", "get", "net_job_000000000000").returncode == cli.NOT_FOUND
    assert qnet(single_mesh, "execute", "/nonexistent/circuit.qasm").returncode == cli.NOT_FOUND
    invalid = qnet(single_mesh, "execute", str(circuits["broken"]), "--backends", "ionq_simulator")
    assert invalid.returncode == cli.USAGE and "INVALID_QASM (400)" in invalid.stderr
    assert qnet(single_mesh, "execute", bell, "--strategy", "bogus").returncode == cli.USAGE
    assert qnet(single_mesh, "execute", bell, "--shots", "many").returncode == cli.USAGE
    failed = qnet(single_mesh, "execute", bell, "--backends", FAULTY_DEVICE, "--shots", "10")
    assert failed.returncode == cli.JOB_FAILED and " failed" in failed.stdout.splitlines()[0]
    assert "ALL_BACKENDS_FAILED" in failed.stdout
    unavailable = qnet(single_mesh, "execute", bell, "--backends", MAINTENANCE_DEVICE)
    assert unavailable.returncode == cli.UNAVAILABLE and "NO_BACKENDS (503)" in unavailable.stderr
    refused = subprocess.run([str(QNET), "status", "--url", "http://127.0.0.1:9", "--key", DEV_KEY],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == cli.UNAVAILABLE and "CONNECTION_ERROR" in refused.stderr


def test_jobs_watch_follows_a_job_to_its_end_and_cancel_says_when_it_is_too_late(single_mesh, circuits):
    submitted = qnet(single_mesh, "execute", str(circuits["bell"]), "--backends", SLOW_DEVICE, "--shots", "20",
                     "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    watched = qnet(single_mesh, "jobs", "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert any(line.endswith(f"completed on {SLOW_DEVICE}") and " event " in line for line in lines)
    assert any(line.startswith(f"job {job_id} completed") for line in lines)
    late = qnet(single_mesh, "jobs", "cancel", job_id)
    assert late.returncode == cli.CONFLICT and "JOB_ALREADY_FINISHED (409)" in late.stderr
    again = qnet(single_mesh, "jobs", "watch", job_id)  # already over: answers at once
    assert again.returncode == 0 and f"job {job_id} completed" in again.stdout


def test_jobs_cancel_stops_a_running_job(single_mesh, circuits):
    job_id = json.loads(qnet(single_mesh, "--json", "execute", str(circuits["bell"]), "--backends", SLOW_DEVICE,
                             "--no-wait").stdout)["job_id"]
    cancelled = qnet(single_mesh, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and f"job {job_id} cancelled" in cancelled.stdout
    assert qnet(single_mesh, "jobs", "watch", job_id).returncode == cli.JOB_FAILED  # it ended cancelled


def test_batch_runs_every_file(single_mesh, circuits):
    result = qnet(single_mesh, "batch", str(circuits["bell"]), str(circuits["ghz"]), "--backends", "ionq_simulator",
                  "--shots", "40")
    assert result.returncode == 0, result.stderr
    assert "completed: 2 jobs" in result.stdout.splitlines()[0]
    assert f"{circuits['ghz']}:" in result.stdout and "111" in result.stdout
    mixed = qnet(single_mesh, "batch", str(circuits["bell"]), str(circuits["broken"]), "--backends",
                 "ionq_simulator", "--json")
    assert mixed.returncode == cli.JOB_FAILED
    assert [j["status"] for j in json.loads(mixed.stdout)["jobs"]] == ["completed", "failed"]


def test_backends_status_topology_metrics_and_estimate(single_mesh, circuits):
    listing = qnet(single_mesh, "backends")
    assert listing.returncode == 0 and "ibm_brisbane" in listing.stdout and MAINTENANCE_DEVICE in listing.stdout
    one = qnet(single_mesh, "backends", "ibm_brisbane")
    assert one.returncode == 0 and "127 qubits, heavy_hex" in one.stdout
    calibration = json.loads(qnet(single_mesh, "backends", "ibm_brisbane", "--calibration", "--json").stdout)
    assert calibration["backend_id"] == "ibm_brisbane" and len(calibration["qubits"]) == 127
    queue = qnet(single_mesh, "backends", "ibm_brisbane", "--queue")
    assert queue.returncode == 0 and queue.stdout.startswith("ibm_brisbane: ")
    status = qnet(single_mesh, "status")
    assert status.returncode == 0 and status.stdout.startswith("network ")
    assert f"{MAINTENANCE_DEVICE}" in status.stdout and "maintenance" in status.stdout
    topology = qnet(single_mesh, "topology")
    assert topology.returncode == 0 and "ibm_brisbane" in topology.stdout and "->" in topology.stdout
    assert qnet(single_mesh, "metrics").stdout.startswith("jobs: ")
    estimate = qnet(single_mesh, "estimate", str(circuits["bell"]), "--backends", "ionq_simulator,ibm_brisbane",
                    "--strategy", "cost_optimized", "--shots", "100")
    assert estimate.returncode == 0 and estimate.stdout.startswith("cost_optimized: ionq_simulator for ")


def test_keys_create_and_an_operator_sets_a_backend_status(single_mesh):
    created = qnet(single_mesh, "keys", "create", "--name", "cli-user", key=None)
    assert created.returncode == 0 and created.stdout.startswith("qnet_")
    user_key = created.stdout.strip()
    assert qnet(single_mesh, "status", key=user_key).returncode == 0  # the new key works at once
    admin = json.loads(qnet(single_mesh, "keys", "create", "--name", "cli-ops", "--admin", "--json", key=None).stdout)
    assert admin["admin"] is True
    address = single_mesh.replicas("backends")[0]  # any adapter service takes a change for any device
    denied = qnet(single_mesh, "admin", "backend", "set-status", MAINTENANCE_DEVICE, "offline", "--address", address,
                  key=user_key)
    assert denied.returncode == cli.AUTH and "PERMISSION_DENIED" in denied.stderr
    try:
        changed = qnet(single_mesh, "admin", "backend", "set-status", MAINTENANCE_DEVICE, "offline", "--address",
                       address, "--admin-key", admin["key"])
        assert changed.returncode == 0 and changed.stdout.strip() == f"{MAINTENANCE_DEVICE} is now offline"
        status = json.loads(qnet(single_mesh, "status", "--json").stdout)
        assert {b["id"]: b["status"] for b in status["backends"]}[MAINTENANCE_DEVICE] == "offline"
        unknown = qnet(single_mesh, "admin", "backend", "set-status", "no_such_backend", "online", "--address",
                       address, "--admin-key", admin["key"])
        assert unknown.returncode == cli.NOT_FOUND
    finally:
        restored = qnet(single_mesh, "admin", "backend", "set-status", MAINTENANCE_DEVICE, "maintenance",
                        "--address", address, "--admin-key", admin["key"])
        assert restored.returncode == 0


def test_a_terminal_sees_progress_while_the_job_waits_and_runs(single_mesh, circuits):
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(QNET), "execute", str(circuits["bell"]), "--backends", SLOW_DEVICE, "--shots",
                                "50"], env=env_for(single_mesh), stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                drawn += os.read(leader, 4096)
            except OSError:
                break
    out, _ = process.communicate(timeout=60)
    os.close(leader)
    text = drawn.decode(errors="replace")
    assert process.returncode == 0 and out.startswith("job net_job_")
    job_id = out.split()[1]
    assert f"{job_id} running " in text  # the in-place line while the device ran it, with the seconds
    assert text.count("\r") >= 3 and text.endswith("\r\x1b[2K")  # redrawn, then cleared before the result
