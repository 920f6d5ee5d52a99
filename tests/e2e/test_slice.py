"""The spec's examples, verbatim, against the real mesh behind Envoy."""

from __future__ import annotations

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""


def test_get_network_status_has_the_documented_shape(mesh):
    reply = mesh.request("GET", "/status")
    assert reply.status == 200 and reply.body["success"] is True
    data = reply.body["data"]
    assert set(data) == {"overall_status", "total_capacity", "active_jobs", "backends"}
    assert data["overall_status"] == "degraded"  # one backend is in maintenance in this mesh
    assert isinstance(data["total_capacity"], int) and data["total_capacity"] > 0
    assert isinstance(data["active_jobs"], int)
    lines = {b["id"]: b for b in data["backends"]}
    assert {"ionq_simulator", "ibm_brisbane", "rigetti_aspen"} <= set(lines)
    assert lines["rigetti_aspen"] == {"id": "rigetti_aspen", "status": "maintenance", "queue_depth": 0}
    assert lines["ionq_simulator"]["status"] == "online"
    online_qubits = sum(
        mesh.request("GET", f"/backends/{b['id']}").body["data"]["num_qubits"]
        for b in data["backends"] if b["status"] == "online"
    )
    assert data["total_capacity"] == online_qubits


def test_execute_with_load_balancing_returns_real_counts(mesh):
    reply = mesh.request("POST", "/execute", {
        "qasm": BELL, "backends": ["ionq_simulator", "ibm_brisbane"], "strategy": "fastest", "shots": 1024,
    })
    assert reply.status == 200, reply.body
    data = reply.body["data"]
    assert data["job_id"].startswith("net_job_")
    assert data["status"] == "completed"
    assert data["backend"] in ("ionq_simulator", "ibm_brisbane")
    assert sum(data["counts"].values()) == 1024
    assert all(isinstance(v, int) for v in data["counts"].values())
    # A Bell pair: almost all shots are 00 or 11, roughly half each (a noisy device may add a few others).
    correlated = data["counts"].get("00", 0) + data["counts"].get("11", 0)
    assert correlated >= 900 and 350 <= data["counts"].get("00", 0) <= 674
    assert isinstance(data["queue_time_s"], float | int) and isinstance(data["execution_time_s"], float | int)
    assert data["execution_time_s"] > 0
    assert data["selection"]["strategy"] == "fastest" and data["selection"]["metric"] == "estimated_wait_s"

    again = mesh.request("GET", f"/execute/{data['job_id']}")
    assert again.status == 200
    assert again.body["data"]["counts"] == data["counts"] and again.body["data"]["status"] == "completed"


def test_backends_list_and_details(mesh):
    listed = mesh.request("GET", "/backends")
    assert listed.status == 200 and listed.body["success"] is True
    ids = [b["id"] for b in listed.body["data"]]
    assert {"ionq_simulator", "ibm_brisbane", "rigetti_aspen"} <= set(ids)
    brisbane = mesh.request("GET", "/backends/ibm_brisbane").body["data"]
    assert brisbane["num_qubits"] == 127 and brisbane["provider"] == "ibm"
    assert brisbane["coupling_map"] and {"control", "target"} <= set(brisbane["coupling_map"][0])
    assert brisbane["simulator"] is False and brisbane["noisy"] is True and brisbane["connectivity"] == "heavy_hex"
    assert brisbane["native_gates"] == ["rz", "sx", "x", "ecr"] and brisbane["price"]["per_second"] == 1.6
    ionq = mesh.request("GET", "/backends/ionq_simulator").body["data"]
    assert ionq["num_qubits"] == 29 and ionq["coupling_map"] == [] and ionq["noisy"] is False


def test_an_idempotency_key_returns_the_same_job(mesh):
    body = {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 64}
    first = mesh.request("POST", "/execute", body, headers={"Idempotency-Key": "e2e-idem-1"})
    second = mesh.request("POST", "/execute", body, headers={"Idempotency-Key": "e2e-idem-1"})
    assert first.status == second.status == 200
    assert first.body["data"]["job_id"] == second.body["data"]["job_id"]
