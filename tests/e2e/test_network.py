"""Network, backends' calibration and queue, aggregation and operators' status changes, through Envoy."""

from __future__ import annotations

import subprocess
import sys
import time

from qnet_common.device_router import LIST_TTL_S
from tests import procs
from tests.e2e.conftest import MAINTENANCE_DEVICE, ROOT
from tests.e2e.test_slice import BELL


def test_calibration_has_per_qubit_and_per_gate_figures_with_their_source(mesh):
    data = mesh.request("GET", "/backends/ibm_brisbane/calibration").body["data"]
    assert data["backend_id"] == "ibm_brisbane" and "FakeBrisbane" in data["source"]
    assert len(data["qubits"]) == 127 and data["qubits"][0]["t1_us"] > 1
    assert {g["gate"] for g in data["gates"]} >= {"ecr", "sx", "x"}
    assert 0 < data["summary"]["mean_two_qubit_error"] < 0.1 and data["taken_at"].startswith("20")


def test_queue_of_an_idle_backend(mesh):
    data = mesh.request("GET", "/backends/ionq_simulator/queue").body["data"]
    assert data["backend_id"] == "ionq_simulator" and data["queue_depth"] == 0 and data["concurrency"] == 1
    assert data["max_queue_depth"] == 200 and isinstance(data["avg_execution_time_s"], float)


def test_metrics_are_computed_from_the_job_store(mesh):
    mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 100})
    data = mesh.request("GET", "/metrics").body["data"]
    assert data["jobs_by_status"]["completed"] >= 1
    assert [t["window_minutes"] for t in data["throughput"]] == [1, 5, 15]
    assert data["throughput"][0]["jobs"] >= 1 and data["shots_executed"] >= 100 and data["currency"] == "USD"
    ionq = next(b for b in data["backends"] if b["backend"] == "ionq_simulator")
    assert ionq["runs"] >= 1 and 0 < ionq["success_rate"] <= 1 and ionq["execution_time_p95_s"] > 0


def test_topology_shows_backends_services_and_links(mesh):
    data = mesh.request("GET", "/topology").body["data"]
    nodes = {n["id"]: n for n in data["nodes"]}
    links = {(link["source"], link["target"]) for link in data["links"]}
    for service in ("scheduler", "backends", "aggregator", "network", "gateway"):
        assert nodes[service]["kind"] == "service" and nodes[service]["status"] == "serving", nodes[service]
        assert sorted(nodes[service]["address"].split(",")) == sorted(mesh.replicas(service))
        replicas = [n for n in data["nodes"] if n["kind"] == "replica" and (service, n["id"]) in links]
        assert sorted(r["address"] for r in replicas) == sorted(mesh.replicas(service))
        assert {r["status"] for r in replicas} == {"serving"}
    # The edge is where this client reached Envoy.
    assert nodes["envoy"]["address"] == mesh.url.split("/")[2] and nodes["envoy"]["status"] == "serving"
    # Each device is linked from the replicas that serve it.
    serving_brisbane = [s for s, t in links if t == "ibm_brisbane" and s.startswith("backends-")]
    assert len(serving_brisbane) == 1
    serving_local = [s for s, t in links if t == "local_simulator" and s.startswith("backends-")]
    assert len(serving_local) == (2 if mesh.topology == "cluster" else 1)
    assert nodes["ibm_brisbane"]["connectivity"] == "heavy_hex" and nodes["ibm_brisbane"]["coupling_edges"] > 100
    assert nodes["rigetti_aspen"]["connectivity"] == "octagonal" and nodes["ionq_simulator"]["coupling_edges"] == 0
    assert ("scheduler", "backends") in links and ("backends", "ibm_brisbane") in links


def test_estimate_prices_each_backend_and_says_what_the_strategy_picks(mesh):
    reply = mesh.request("POST", "/estimate", {
        "qasm": BELL, "shots": 1000, "backends": ["ibm_brisbane", "ionq_aria", "rigetti_aspen"]})
    data = reply.body["data"]
    costs = {b["backend"]: b for b in data["backends"]}
    assert abs(costs["ionq_aria"]["cost"] - (0.30 + 1000 * 0.03)) < 1e-9
    assert costs["rigetti_aspen"]["eligible"] is False and "maintenance" in costs["rigetti_aspen"]["note"]
    assert data["strategy"] == "cost_optimized" and data["selected"] == ["ibm_brisbane"]
    assert data["total_cost"] == costs["ibm_brisbane"]["cost"] and data["currency"] == "USD"
    everything = mesh.request("POST", "/estimate", {"qasm": BELL, "shots": 10, "strategy": "all",
                                                    "backends": ["ibm_brisbane", "ionq_aria"]}).body["data"]
    assert abs(everything["total_cost"] - sum(b["cost"] for b in everything["backends"])) < 1e-6


def test_aggregate_manually_and_list_the_methods(mesh):
    body = {"results": [{"backend": "a", "counts": {"00": 510, "11": 514}},
                        {"backend": "b", "counts": {"00": 505, "11": 519}, "fidelity": 0.9}],
            "method": "weighted_average"}
    data = mesh.request("POST", "/aggregate", body).body["data"]
    assert sum(data["aggregated_counts"].values()) == 1024 and 0.9 < data["aggregation_confidence"] <= 1
    assert {b["backend"] for b in data["backends"]} == {"a", "b"}
    methods = mesh.request("GET", "/aggregate/methods").body["data"]
    assert [m["name"] for m in methods] == ["weighted_average", "majority_vote", "confidence_weighted", "median"]
    assert all(len(m["description"]) > 40 for m in methods)
    bad = mesh.request("POST", "/aggregate", {"results": [{"backend": "a", "counts": {"0x": 1}}]})
    assert bad.status == 400 and bad.body["error"]["code"] == "INVALID_COUNTS"


def test_an_operator_takes_a_backend_offline_and_everything_follows(mesh):
    ops_key = mesh.create_key("ops", admin=True)
    user_key = mesh.create_key("not-ops")

    def cli(key: str, status: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            # The README's form: options after the subcommand.
            [sys.executable, "-m", "services.backends.cli", "set-status", "ionq_simulator", status,
             "--address", mesh.replicas("backends")[0], "--key", key],
            cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"}, timeout=60)

    refused = cli(user_key, "offline")
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    assert cli(ops_key, "offline").returncode == 0
    try:
        status = {b["id"]: b["status"] for b in mesh.request("GET", "/status").body["data"]["backends"]}
        assert status["ionq_simulator"] == "offline" and status[MAINTENANCE_DEVICE] == "maintenance"
        assert mesh.request("GET", "/backends/ionq_simulator").body["data"]["status"] == "offline"
        job = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator", "ibm_brisbane"],
                                                "shots": 50}).body["data"]
        assert job["backend"] == "ibm_brisbane"
        skipped = next(s for s in job["selection"]["scores"] if s["backend"] == "ionq_simulator")
        assert skipped["eligible"] is False and skipped["note"] == "backend is offline"
    finally:
        assert cli(ops_key, "online").returncode == 0
    # Once the operator's command returns, the very next job may use the backend again (no stale status).
    reply = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 10})
    assert reply.status == 200 and reply.body["data"]["backend"] == "ionq_simulator", reply.body


def listings_answered(mesh) -> int:
    """ListDevices calls the backends replicas have answered."""
    return sum(procs.rpcs_handled(address, "ListDevices") for name, address in mesh.metrics.items()
               if name == "backends" or name.startswith("backends-"))


def test_status_and_the_catalogue_do_not_ask_every_replica_on_every_request(mesh):
    """Each GET /status or /backends used to list the devices of every backends replica (one ListDevices per
    replica per request, the bulk of a status request's cost); the listing is now shared for LIST_TTL_S, with
    the statuses read as stored at each request (an operator's change shows at once: the test above)."""
    replicas = sum(1 for name in mesh.metrics if name == "backends" or name.startswith("backends-"))
    before = listings_answered(mesh)
    started = time.monotonic()
    for _ in range(40):
        assert mesh.request("GET", "/status").status == 200
        assert mesh.request("GET", "/backends").status == 200
    elapsed = time.monotonic() - started
    # Schedulers list too (every LIST_TTL_S at most while they run jobs); none run here.
    listings = (listings_answered(mesh) - before) / replicas
    assert listings <= elapsed / LIST_TTL_S + 2, f"{listings:.0f} listings per replica for 80 requests"
