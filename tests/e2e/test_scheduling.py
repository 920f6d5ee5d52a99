"""The strategies, retries, failover, cancellation, batches and quotas, through Envoy as a client sees them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import SLOW_DEVICE, UNREACHABLE_DEVICE
from tests.e2e.test_slice import BELL


def execute(mesh, **body):
    reply = mesh.request("POST", "/execute", {"qasm": BELL, "shots": 256, **body})
    assert reply.status == 200, reply.body
    return reply.body["data"]


def test_best_fidelity_picks_the_highest_circuit_specific_success_probability(mesh):
    listed = ["ibm_brisbane", "rigetti_aspen"]
    job = execute(mesh, backends=listed, strategy="best_fidelity")
    scores = {s["backend"]: s["score"] for s in job["selection"]["scores"]}
    # Expected from each device's published calibration alone: a Bell circuit is about two one-qubit gates,
    # one two-qubit gate and two readouts, so its success probability is near this product.
    expected = {}
    for backend in listed:
        c = mesh.request("GET", f"/backends/{backend}").body["data"]["calibration"]
        expected[backend] = ((1 - c["mean_single_qubit_error"]) ** 2 * (1 - c["mean_two_qubit_error"])
                             * (1 - c["mean_readout_error"]) ** 2)
    assert abs(expected["ibm_brisbane"] - expected["rigetti_aspen"]) > 0.02  # a clear winner to find
    assert job["backend"] == max(expected, key=expected.get)
    # The scores are compiled-circuit estimates on the qubits chosen, so near, not equal to, the averages.
    assert all(abs(scores[b] - expected[b]) < 0.1 for b in listed), (scores, expected)


def test_cost_optimized_picks_the_cheapest_and_says_what_it_compared(mesh):
    job = execute(mesh, backends=["ionq_aria", "ibm_brisbane"], strategy="cost_optimized")
    scores = {s["backend"]: s["score"] for s in job["selection"]["scores"]}
    # Aria: $0.30 + 256 x $0.03 = $7.98; IBM: $1.60/s for a little over 2 s of usage.
    assert job["backend"] == "ibm_brisbane" and job["selection"]["metric"] == "estimated_cost_usd"
    assert abs(scores["ionq_aria"] - (0.30 + 256 * 0.03)) < 1e-6 and 3.2 < scores["ibm_brisbane"] < 4


def test_round_robin_alternates_over_successive_jobs(mesh):
    picks = [execute(mesh, backends=["ionq_simulator", "ibm_brisbane"], strategy="round_robin")["backend"]
             for _ in range(4)]
    assert picks[0] != picks[1] and picks[0] == picks[2] and picks[1] == picks[3]


def test_ordered_fails_over_after_retrying_an_unreachable_backend(mesh):
    job = execute(mesh, backends=[UNREACHABLE_DEVICE, "ionq_simulator"], strategy="ordered")
    assert job["status"] == "completed" and job["backend"] == "ionq_simulator"
    first, second = job["results"]
    assert first["backend"] == UNREACHABLE_DEVICE and first["status"] == "failed"
    assert first["attempts"] == 3 and first["error"]["code"] == "BACKEND_UNAVAILABLE"
    assert second["status"] == "completed" and second["attempts"] == 1


def heavy_ghz(qubits: int, layers: int) -> str:
    """A GHZ state under layers of rotations that undo each other: seconds of state-vector work, two outcomes."""
    lines = ['OPENQASM 2.0; include "qelib1.inc";', f"qreg q[{qubits}]; creg c[{qubits}];", "h q[0];"]
    lines += [f"cx q[{i}],q[{i + 1}];" for i in range(qubits - 1)]
    for _ in range(layers):
        lines += [f"rx(0.3) q[{i}]; rx(-0.3) q[{i}];" for i in range(qubits)]
    return "\n".join([*lines, "measure q -> c;"])


def test_all_runs_its_backends_at_once_and_aggregates(mesh):
    # Two backends that each take seconds: run one after the other, the client would wait for their sum.
    listed = ["ionq_simulator", SLOW_DEVICE, "ibm_brisbane"]
    qasm = heavy_ghz(22, 4)  # braket_sv: 2^22 amplitudes through 219 gates; the slow device sleeps 2-3 s
    started = time.monotonic()
    job = execute(mesh, qasm=qasm, backends=listed[:2], strategy="all", aggregate=True, aggregation_method="median",
                  shots=1024)
    wall_s = time.monotonic() - started
    assert job["status"] == "completed", job
    assert [r["backend"] for r in job["results"]] == listed[:2]
    assert all(sum(r["counts"].values()) == 1024 for r in job["results"])
    assert set(job["aggregated_counts"]) <= {"0" * 22, "1" * 22} and sum(job["aggregated_counts"].values()) == 1024
    assert 0 < job["aggregation_confidence"] <= 1 and job["aggregation_method"] == "median"
    times = sorted(r["execution_time_s"] for r in job["results"])
    assert times[0] >= 1.0, job["results"]  # both spent their time inside their runs
    # Concurrent: the client waited about as long as the slower backend ran, not for both.
    assert wall_s < times[-1] + 0.8 < sum(times), (wall_s, times)
    # Three backends of a small circuit aggregate too.
    small = execute(mesh, backends=listed, strategy="all", aggregate=True, aggregation_method="median", shots=1024)
    assert [r["backend"] for r in small["results"]] == listed and sum(small["aggregated_counts"].values()) == 1024


def device_tasks_of(mesh, job_id: str) -> list[str]:
    """The statuses of the job's tasks that its device's queue holds (queued or running)."""
    queue = mesh.request("GET", f"/backends/{SLOW_DEVICE}/queue").body["data"]
    return [t["status"] for t in queue["tasks"] if t["task_id"].startswith(job_id)]


def test_cancelling_a_running_job_stops_it_and_its_device_task(mesh):
    job = execute(mesh, backends=[SLOW_DEVICE], return_immediately=True)
    deadline = time.monotonic() + 10
    while device_tasks_of(mesh, job["job_id"]) != ["running"]:  # the device runs it (2-3 s)
        assert time.monotonic() < deadline, mesh.request("GET", f"/execute/{job['job_id']}").body
        time.sleep(0.05)
    time.sleep(0.5)  # past the submission's own wait: the scheduler holds the task's handle
    cancelled = mesh.request("DELETE", f"/execute/{job['job_id']}")
    assert cancelled.status == 200 and cancelled.body["data"]["status"] == "cancelled"
    # The device's task is withdrawn too, well before it would have ended by itself.
    deadline = time.monotonic() + 1.0
    while device_tasks_of(mesh, job["job_id"]):
        assert time.monotonic() < deadline, "the device task still runs after its job was cancelled"
        time.sleep(0.05)
    time.sleep(3.5)  # longer than the slow task: its result must not be recorded
    after = mesh.request("GET", f"/execute/{job['job_id']}").body["data"]
    assert after["status"] == "cancelled" and after["counts"] == {}
    assert device_tasks_of(mesh, job["job_id"]) == []


def test_a_batch_reports_each_circuit_and_a_bad_one_alone(mesh):
    reply = mesh.request("POST", "/execute/batch", {
        "circuits": [{"qasm": BELL}, {"qasm": "OPENQASM 2.0;\nqreg q[1];\nbogus q[0];"}, {"qasm": BELL, "shots": 8}],
        "backends": ["ionq_simulator"], "shots": 64,
    })
    assert reply.status == 200, reply.body
    batch = reply.body["data"]
    assert batch["batch_id"].startswith("net_batch_") and len(batch["jobs"]) == 3
    bad = batch["jobs"][1]
    assert bad["status"] == "failed" and bad["error"]["code"] == "INVALID_QASM" and "line 3" in bad["error"]["message"]
    deadline = time.monotonic() + 60
    while True:
        state = mesh.request("GET", f"/execute/batch/{batch['batch_id']}").body["data"]
        if state["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["status"] == "failed"  # one circuit failed; the others completed
    assert [j["status"] for j in state["jobs"]] == ["completed", "failed", "completed"]
    assert sum(state["jobs"][2]["counts"].values()) == 8 and sum(state["jobs"][0]["counts"].values()) == 64


def test_fifty_concurrent_submissions_never_overspend_a_quota(mesh):
    key = mesh.create_key("budget", shots_per_day=10 * 32)
    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 32, "return_immediately": True}
    with ThreadPoolExecutor(25) as pool:
        replies = list(pool.map(lambda _: mesh.request("POST", "/execute", body, key=key), range(50)))
    statuses = sorted(r.status for r in replies)
    assert statuses.count(200) == 10 and statuses.count(403) == 40
    assert {r.body["error"]["code"] for r in replies if r.status == 403} == {"QUOTA_EXCEEDED"}


def test_twenty_concurrent_retries_with_one_idempotency_key_make_one_job_and_one_charge(mesh):
    key = mesh.create_key("retrier", shots_per_day=25)  # room for two 10-shot jobs
    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 10, "return_immediately": True}
    retry = {"Idempotency-Key": "order-7"}
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: mesh.request("POST", "/execute", body, key=key, headers=retry), range(20)))
    assert [r.status for r in replies] == [200] * 20, [r.body for r in replies if r.status != 200][:3]
    assert len({r.body["data"]["job_id"] for r in replies}) == 1
    # Charged once: the next genuine request fits, the one after it does not.
    assert mesh.request("POST", "/execute", body, key=key, headers={"Idempotency-Key": "order-8"}).status == 200
    refused = mesh.request("POST", "/execute", body, key=key, headers={"Idempotency-Key": "order-9"})
    assert (refused.status, refused.body["error"]["code"]) == (403, "QUOTA_EXCEEDED")


def test_concurrent_retries_under_a_quota_that_fits_only_their_job_are_all_answered_with_it(mesh):
    key = mesh.create_key("tight", shots_per_day=10)  # room for this one 10-shot job and nothing more
    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 10, "return_immediately": True}
    retry = {"Idempotency-Key": "order-tight"}
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: mesh.request("POST", "/execute", body, key=key, headers=retry), range(20)))
    assert [r.status for r in replies] == [200] * 20, [r.body for r in replies if r.status != 200][:3]
    assert len({r.body["data"]["job_id"] for r in replies}) == 1
    refused = mesh.request("POST", "/execute", body, key=key, headers={"Idempotency-Key": "order-other"})
    assert (refused.status, refused.body["error"]["code"]) == (403, "QUOTA_EXCEEDED")


def test_every_method_the_aggregator_lists_is_accepted_for_a_job_end_to_end(mesh):
    """The aggregator owns the list of methods: the scheduler accepts whatever it lists, and nothing else."""
    listed = [m["name"] for m in mesh.request("GET", "/aggregate/methods").body["data"]]
    assert len(listed) == 4
    for method in listed:
        job = execute(mesh, backends=["ionq_simulator", "ibm_brisbane"], strategy="all", aggregate=True,
                      aggregation_method=method)
        assert job["status"] == "completed" and job["aggregation_method"] == method, job
        assert sum(job["aggregated_counts"].values()) == 256
    refused = mesh.request("POST", "/execute", {"qasm": BELL, "strategy": "all", "aggregate": True,
                                                "aggregation_method": "trimmed_mean"})
    assert (refused.status, refused.body["error"]["code"]) == (400, "INVALID_AGGREGATION_METHOD")
    assert all(m in refused.body["error"]["message"] for m in listed)
