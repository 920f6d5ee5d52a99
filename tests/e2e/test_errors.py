"""Every documented error code, end to end through Envoy: HTTP status and the spec's envelope."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import FAULTY_DEVICE, MAINTENANCE_DEVICE
from tests.e2e.test_slice import BELL


def assert_error(reply, status: int, code: str) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.body["success"] is False, reply.body
    assert reply.body["error"]["code"] == code, reply.body
    message = reply.body["error"]["message"]
    assert isinstance(message, str) and len(message) > 10
    assert reply.headers.get("content-type", "").startswith("application/json")
    return message


def test_no_backends_503(mesh):
    message = assert_error(
        mesh.request("POST", "/execute", {"qasm": BELL, "backends": [MAINTENANCE_DEVICE]}), 503, "NO_BACKENDS"
    )
    assert "maintenance" in message


def test_all_backends_failed_503_lists_each_backend(mesh):
    message = assert_error(
        mesh.request("POST", "/execute", {"qasm": BELL, "backends": [FAULTY_DEVICE], "strategy": "ordered"}),
        503, "ALL_BACKENDS_FAILED",
    )
    assert FAULTY_DEVICE in message and "net_job_" in message


def test_aggregation_failed_500_for_opposite_results(mesh):
    body = {"results": [{"backend": "a", "counts": {"00": 1000}}, {"backend": "b", "counts": {"11": 1000}}]}
    message = assert_error(mesh.request("POST", "/aggregate", body), 500, "AGGREGATION_FAILED")
    assert "a" in message and "b" in message


def test_invalid_strategy_400(mesh):
    message = assert_error(mesh.request("POST", "/execute", {"qasm": BELL, "strategy": "cheapest"}), 400,
                           "INVALID_STRATEGY")
    assert "cost_optimized" in message


def test_backend_not_found_404(mesh):
    assert_error(mesh.request("GET", "/backends/ibm_nowhere"), 404, "BACKEND_NOT_FOUND")
    assert_error(mesh.request("GET", "/backends/ibm_nowhere/queue"), 404, "BACKEND_NOT_FOUND")
    assert_error(mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ibm_nowhere"]}), 404,
                 "BACKEND_NOT_FOUND")


def test_quota_exceeded_403(mesh):
    key = mesh.create_key("small", shots_per_day=100)
    message = assert_error(
        mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 1024}, key=key),
        403, "QUOTA_EXCEEDED",
    )
    assert "100" in message
    ok = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 100}, key=key)
    assert ok.status == 200


@pytest.mark.parametrize("key", [None, "qnet_wrong_key"])
def test_unauthenticated_401(mesh, key):
    assert_error(mesh.request("GET", "/status", key=key), 401, "UNAUTHENTICATED")


def test_malformed_json_400(mesh):
    message = assert_error(mesh.request("POST", "/execute", raw=b'{"qasm": '), 400, "INVALID_ARGUMENT")
    assert "JSON" in message or "json" in message


def test_unknown_query_parameter_400(mesh):
    message = assert_error(mesh.request("GET", "/status?verbose=1"), 400, "INVALID_ARGUMENT")
    assert "verbose" in message


def test_wrong_field_type_400(mesh):
    assert_error(mesh.request("POST", "/execute", {"qasm": BELL, "shots": "many"}), 400, "INVALID_ARGUMENT")


def test_invalid_qasm_400_says_where(mesh):
    message = assert_error(
        mesh.request("POST", "/execute", {"qasm": "OPENQASM 2.0;\nqreg q[2];\nfoo q[0];\n"}), 400, "INVALID_QASM"
    )
    assert "line 3" in message


def test_invalid_shots_400(mesh):
    assert_error(mesh.request("POST", "/execute", {"qasm": BELL, "shots": -5}), 400, "INVALID_SHOTS")


def test_job_not_found_404_and_cancel_of_a_finished_job_409(mesh):
    assert_error(mesh.request("GET", "/execute/net_job_000000000000"), 404, "JOB_NOT_FOUND")
    done = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16})
    job_id = done.body["data"]["job_id"]
    assert_error(mesh.request("DELETE", f"/execute/{job_id}"), 409, "JOB_ALREADY_FINISHED")
    assert mesh.request("GET", f"/execute/{job_id}").body["data"]["status"] == "completed"


def test_another_keys_job_is_not_found(mesh):
    done = mesh.request("POST", "/execute", {"qasm": BELL, "backends": ["ionq_simulator"], "shots": 16})
    other = mesh.create_key("other")
    assert_error(mesh.request("GET", f"/execute/{done.body['data']['job_id']}", key=other), 404, "JOB_NOT_FOUND")


def test_unknown_route_404_envelope(mesh):
    reply = mesh.request("GET", "/nowhere")
    assert reply.status == 404 and reply.body["success"] is False and reply.body["error"]["code"] == "NOT_FOUND"


def test_a_misspelt_field_is_refused_not_ignored(mesh):
    message = assert_error(mesh.request("POST", "/execute", {"qasm": BELL, "stratgy": "all"}), 400, "INVALID_ARGUMENT")
    assert "stratgy" in message and "strategy" in message
