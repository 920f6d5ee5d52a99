"""The edge answers every malformed request of the attacker's report with a documented status in the envelope:
no 500, no empty 200, no misleading 429. Each case failed before (quoted in the test's docstring)."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from qnet.scheduler.v1 import job_events_service_pb2 as ev
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from websockets.asyncio.client import connect

from tests.e2e.conftest import DEV_KEY, SERVICE_KEY
from tests.e2e.test_auth import public_routes
from tests.e2e.test_slice import BELL
from tests.e2e.test_stream import ws_url

ID_ROUTES = [(m, p) for m, p in public_routes() if "x1" in p]


def assert_envelope(reply, status: int, code: str, *words: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.body.get("success") is False and set(reply.body) == {"success", "error"}, reply.body
    assert reply.body["error"]["code"] == code, reply.body
    for word in words:
        assert word in reply.body["error"]["message"], reply.body


def test_the_six_id_routes_are_all_covered():
    assert len(ID_ROUTES) == 6


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
def test_an_id_that_is_not_utf8_is_a_400_not_a_500(mesh, method, path):
    """Was: 500 UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>"."""
    reply = mesh.request(method, path.removeprefix("/api/v2/network").replace("x1", "%C3%28"))
    assert_envelope(reply, 400, "INVALID_ARGUMENT", "%C3", "ids are ASCII")


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
def test_an_id_of_twenty_thousand_characters_is_a_400_not_a_429(mesh, method, path):
    """Was: 429 RESOURCE_EXHAUSTED, which tells a client to retry what can never succeed."""
    reply = mesh.request(method, path.removeprefix("/api/v2/network").replace("x1", "a" * 20_000))
    assert_envelope(reply, 400, "INVALID_ARGUMENT", "at most 2048")


@pytest.mark.parametrize(("value", "got"), [({"x": 1}, "an object"), (2**31, str(2**31)), (-(2**31) - 1,
                                            str(-(2**31) - 1)), (1.5, "1.5"), ("7", '"7"'), ([1], "a list")])
def test_a_count_of_the_wrong_type_or_range_is_a_400_naming_the_field(mesh, value, got):
    """Was: 500 "Wire format was corrupt" for an object, 500 "Value out of range" past int32."""
    reply = mesh.request("POST", "/aggregate", {"results": [{"backend": "a", "counts": {"00": value}}]})
    assert_envelope(reply, 400, "INVALID_ARGUMENT", 'field "results[0].counts.00"', "expected an integer", got)


@pytest.mark.parametrize(("body", "field", "expected"), [
    ({"qasm": 5}, "qasm", "a string"),
    ({"qasm": BELL, "shots": "ten"}, "shots", "an integer"),
    ({"qasm": BELL, "backends": "ionq_simulator"}, "backends", "a list"),
    ({"qasm": BELL, "backends": [3]}, "backends[0]", "a string"),
    ({"qasm": BELL, "return_immediately": "yes"}, "return_immediately", "true or false"),
])
def test_every_scalar_field_is_checked_for_its_json_type(mesh, body, field, expected):
    reply = mesh.request("POST", "/execute", body)
    assert_envelope(reply, 400, "INVALID_ARGUMENT", f'field "{field}"', expected)


@pytest.mark.parametrize("path", ["/execute", "/aggregate", "/estimate", "/execute/batch"])
def test_a_grpc_content_type_on_a_rest_route_gets_a_rest_answer(mesh, path):
    """Was: HTTP 200 with an empty body (Envoy's gRPC-style local reply)."""
    request = urllib.request.Request(mesh.url + path, data=b"\x00\x00\x00\x00\x05hello", method="POST",
                                     headers={"Authorization": f"Bearer {DEV_KEY}",
                                              "Content-Type": "application/grpc"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a gRPC-typed REST request was answered 2xx")
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        assert error.code == 400 and error.headers["content-type"].startswith("application/json")
        assert body["success"] is False and body["error"]["code"] == "INVALID_ARGUMENT"
        assert "application/json" in body["error"]["message"]


def test_a_grpc_content_type_with_a_json_body_is_served_as_json(mesh):
    reply = mesh.request("POST", "/estimate", {"qasm": BELL, "shots": 10, "backends": ["ionq_simulator"]},
                         headers={"Content-Type": "application/grpc"})
    assert reply.status == 200 and reply.body["data"]["backends"][0]["backend"] == "ionq_simulator"


def test_list_events_refuses_a_negative_limit(mesh):
    """Was: limit=-1 skipped the page cap (SQLite's LIMIT -1)."""
    with grpc.insecure_channel(mesh.replicas("scheduler")[0]) as channel, pytest.raises(grpc.RpcError) as raised:
        ev_grpc.JobEventsServiceStub(channel).ListEvents(
            ev.ListEventsRequest(limit=-1), metadata=(("authorization", f"Bearer {SERVICE_KEY}"),), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit=-1" in raised.value.details()


async def test_deeply_nested_json_on_the_stream_is_an_error_and_the_connection_stays_usable(mesh):
    """Was: 1011 before subscribing, a silent 1000 after."""
    nested = "[" * 100_000 + "]" * 100_000
    async with connect(ws_url(mesh), max_size=2**22) as ws:
        await ws.send(nested)
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "INVALID_ARGUMENT" and "nested" in error["message"]
        await ws.send(json.dumps({"api_key": DEV_KEY, "subscribe": ["backend_status"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await ws.send(nested)
        error = json.loads(await ws.recv())
        assert error["code"] == "INVALID_ARGUMENT" and "nested" in error["message"]
        await ws.ping()  # still open


async def test_a_since_beyond_any_event_id_is_refused_and_the_connection_stays_usable(mesh):
    """Was: acknowledged, then the connection died with 1011."""
    async with connect(ws_url(mesh)) as ws:
        await ws.send(json.dumps({"api_key": DEV_KEY, "since": 2**63}))
        error = json.loads(await ws.recv())
        assert error["code"] == "INVALID_ARGUMENT" and str(2**63 - 1) in error["message"]
        await ws.send(json.dumps({"api_key": DEV_KEY, "since": 2**63 - 1, "subscribe": ["backend_status"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/execute", {"qasm": BELL, "backends": [f"b{i}" for i in range(33)]}, ("field 'backends'", "at most 32")),
    ("/estimate", {"qasm": BELL, "backends": [f"b{i}" for i in range(33)]}, ("field 'backends'", "at most 32")),
    ("/execute/batch", {"circuits": [{"qasm": BELL}] * 101}, ("field 'circuits'", "at most 100")),
    ("/aggregate", {"results": [{"backend": f"b{i}", "counts": {"0": 1}} for i in range(10_001)]},
     ("field 'results'", "at most 10000")),
])
def test_every_list_in_a_request_has_a_documented_limit(mesh, path, body, words):
    """Was: no limit (a batch of 200 circuits took 8.3 s; /aggregate was quadratic up to the body limit)."""
    assert_envelope(mesh.request("POST", path, body), 400, "INVALID_ARGUMENT", *words)
