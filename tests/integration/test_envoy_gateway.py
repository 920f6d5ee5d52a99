"""Real Envoy (rendered from deploy/envoy/envoy.yaml.tmpl) in front of small grpc.aio and WebSocket servers.

What a REST client sees: transcoded JSON, every error in the envelope with its HTTP status, the WebSocket
route upgraded; and native gRPC through the same port left intact.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import pathlib
import socket
import threading

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from qnet.aggregator.v1 import aggregation_service_pb2 as agg
from qnet.aggregator.v1 import aggregation_service_pb2_grpc as agg_grpc
from qnet.backends.v1 import backend_service_pb2 as bk
from qnet.backends.v1 import backend_service_pb2_grpc as bk_grpc
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from qnet_common.envoy import ENVELOPE_HEADER, error_trailers
from qnet_common.envoy_config import render_config
from qnet_common.envoy_process import EnvoyProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "gen" / "qnet.pb"
TOKEN = "Bearer good-key"

#: GetBackend ids that fail, as the qnet interceptor fails them: (gRPC code, documented code, message).
FAILURES = {
    "missing": (grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND", "backend 'missing' does not exist; list them"),
    "quota": (grpc.StatusCode.PERMISSION_DENIED, "QUOTA_EXCEEDED", "daily quota of 100 shots used; ask for more"),
    "strategy": (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_STRATEGY", "use fastest or cost_optimized"),
    "empty": (grpc.StatusCode.UNAVAILABLE, "NO_BACKENDS", "no backend is online; retry later"),
    "diverged": (grpc.StatusCode.INTERNAL, "AGGREGATION_FAILED", "results too far apart: 0.9 > 0.5"),
    "finished": (grpc.StatusCode.ABORTED, "JOB_ALREADY_FINISHED", "job is completed; nothing to cancel"),
    "unicode": (grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND", "no backend named \u201cqpu-\u00e9\u201d"),
}


def abort_args(grpc_code: grpc.StatusCode, code: str, message: str, *, envelope: bool = True):
    """What the qnet interceptor passes to context.abort: a Status with one ErrorInfo, plus the envelope."""
    detail = status_pb2.Status(code=grpc_code.value[0], message=message)
    detail.details.add().Pack(error_details_pb2.ErrorInfo(reason=code, domain="qnet.softquantus.com"))
    status = rpc_status.to_status(detail)
    trailers = tuple(status.trailing_metadata) + (tuple(error_trailers(code, message)) if envelope else ())
    return status.code, status.details, trailers


class Backends(bk_grpc.BackendServiceServicer):
    async def GetBackend(self, request, context):  # gRPC's name
        if request.id in FAILURES:
            await context.abort(*abort_args(*FAILURES[request.id]))
        if request.id == "private" and dict(context.invocation_metadata()).get("authorization") != TOKEN:
            await context.abort(*abort_args(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED",
                                            "send the header 'Authorization: Bearer <key>'"))
        if request.id == "late":  # initial metadata first: the envelope arrives as a real trailer
            await context.send_initial_metadata((("x-qnet-test", "1"),))
            await context.abort(*abort_args(*FAILURES["missing"]))
        if request.id == "bare":  # a server outside the interceptor: no details, no envelope
            await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        if request.id == "info-only":  # an ErrorInfo but no envelope trailer
            await context.abort(*abort_args(*FAILURES["quota"], envelope=False))
        if request.id == "slow":
            await asyncio.sleep(30)
        return bk.GetBackendResponse(success=True, data={"id": request.id, "name": "Test QPU", "num_qubits": 5})


class Aggregation(agg_grpc.AggregationServiceServicer):
    def __init__(self) -> None:
        self.requests: list[agg.AggregateRequest] = []

    async def Aggregate(self, request, context):
        self.requests.append(request)
        counts = dict(request.results[0].counts) if request.results else {}
        return agg.AggregateResponse(success=True, data={"method": request.method, "aggregated_counts": counts,
                                                         "shots": request.shots, "mitigated": request.mitigate})


class Upstreams:
    """The gRPC test server and a WebSocket echo server on their own event loop in a thread (port 0)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.aggregation = Aggregation()
        self.grpc_port = 0
        self.ws_port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Upstreams:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self._grpc = grpc.aio.server()
        bk_grpc.add_BackendServiceServicer_to_server(Backends(), self._grpc)
        agg_grpc.add_AggregationServiceServicer_to_server(self.aggregation, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()

        async def echo(ws) -> None:
            await ws.send(json.dumps({"path": ws.request.path}))
            async for message in ws:
                await ws.send(message)

        self._ws = await serve(echo, "127.0.0.1", 0)
        self.ws_port = self._ws.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._ws.close()
        await self._ws.wait_closed()
        await self._grpc.stop(0)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_envoy(upstreams: Upstreams, tmp: pathlib.Path, **options: object) -> EnvoyProcess:
    here = ("127.0.0.1", upstreams.grpc_port)
    config = render_config(
        listen_host="127.0.0.1", listen_port=0, admin_port=0, descriptor_path=str(DESCRIPTOR),
        upstreams={
            "qnet.backends.v1.BackendService": [here],
            "qnet.aggregator.v1.AggregationService": [here],
            "qnet.scheduler.v1.ExecutionService": [here],  # not served here: UNIMPLEMENTED
            "qnet.network.v1.NetworkService": [("127.0.0.1", closed_port())],  # a service that is down
        },
        stream_upstreams=[("127.0.0.1", upstreams.ws_port)], **options,
    )
    envoy = EnvoyProcess(config, workdir=tmp)
    envoy.start()
    return envoy


@pytest.fixture(scope="module")
def upstreams():
    with Upstreams() as servers:
        yield servers


@pytest.fixture(scope="module")
def envoy(upstreams, tmp_path_factory):
    process = start_envoy(upstreams, tmp_path_factory.mktemp("envoy"))
    yield process
    process.stop()


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.text = response.read().decode()
        self.body = json.loads(self.text) if self.text else None


def call(envoy: EnvoyProcess, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", envoy.http_port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return Reply(connection.getresponse())
    finally:
        connection.close()


def assert_envelope(reply: Reply, status: int, code: str) -> str:
    assert reply.status == status, (reply.status, reply.text)
    assert reply.headers["content-type"] == "application/json"
    assert reply.body["success"] is False and set(reply.body) == {"success", "error"}, reply.text
    assert reply.body["error"]["code"] == code, reply.text
    assert set(reply.body["error"]) == {"code", "message"}
    assert ENVELOPE_HEADER not in reply.headers and not any(h.startswith("grpc-") for h in reply.headers)
    return reply.body["error"]["message"]


def test_success_is_transcoded_json_with_zero_fields_printed_in_snake_case(envoy):
    reply = call(envoy, "GET", "/api/v2/network/backends/ok")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    data = reply.body["data"]
    assert reply.body["success"] is True
    assert data["id"] == "ok" and data["num_qubits"] == 5
    assert data["queue_depth"] == 0 and data["simulator"] is False and data["coupling_map"] == []
    assert data["supports_classical_control"] is False and "numQubits" not in data
    assert not any(h.startswith("grpc-") for h in reply.headers)


@pytest.mark.parametrize(("backend", "status"), [
    ("missing", 404), ("quota", 403), ("strategy", 400), ("empty", 503), ("diverged", 500), ("finished", 409),
])
def test_a_grpc_error_becomes_the_envelope_with_its_http_status(envoy, backend, status):
    _, code, message = FAILURES[backend]
    assert assert_envelope(call(envoy, "GET", f"/api/v2/network/backends/{backend}"), status, code) == message


def test_a_non_ascii_message_survives(envoy):
    message = assert_envelope(call(envoy, "GET", "/api/v2/network/backends/unicode"), 404, "BACKEND_NOT_FOUND")
    assert message == FAILURES["unicode"][2]


def test_the_bearer_token_reaches_the_service_and_its_absence_is_401(envoy):
    assert_envelope(call(envoy, "GET", "/api/v2/network/backends/private"), 401, "UNAUTHENTICATED")
    wrong = call(envoy, "GET", "/api/v2/network/backends/private", headers={"Authorization": "Bearer nope"})
    assert_envelope(wrong, 401, "UNAUTHENTICATED")
    ok = call(envoy, "GET", "/api/v2/network/backends/private", headers={"Authorization": TOKEN})
    assert ok.status == 200 and ok.body["data"]["id"] == "private"


def test_an_envelope_sent_as_a_real_trailer_is_used_too(envoy):
    assert_envelope(call(envoy, "GET", "/api/v2/network/backends/late"), 404, "BACKEND_NOT_FOUND")


def test_errors_without_the_envelope_trailer_are_still_enveloped(envoy):
    assert assert_envelope(call(envoy, "GET", "/api/v2/network/backends/bare"), 404, "NOT_FOUND") == "nothing here"
    message = assert_envelope(call(envoy, "GET", "/api/v2/network/backends/info-only"), 403, "QUOTA_EXCEEDED")
    assert message == FAILURES["quota"][2]
    # The scheduler's RPCs are not served by the test server: grpc answers UNIMPLEMENTED itself.
    assert_envelope(call(envoy, "GET", "/api/v2/network/execute/job_1"), 501, "UNIMPLEMENTED")


def test_malformed_json_is_400(envoy):
    message = assert_envelope(call(envoy, "POST", "/api/v2/network/aggregate", "{bad"), 400, "INVALID_ARGUMENT")
    assert "valid JSON" in message
    wrong_type = call(envoy, "POST", "/api/v2/network/aggregate", '{"shots": "many"}')
    assert "shots" in assert_envelope(wrong_type, 400, "INVALID_ARGUMENT")


def test_unknown_json_fields_are_400_naming_the_field_and_the_accepted_ones(envoy, upstreams):
    before = len(upstreams.aggregation.requests)
    message = assert_envelope(call(envoy, "POST", "/api/v2/network/aggregate", '{"methd": "median"}'), 400,
                              "INVALID_ARGUMENT")
    assert '"methd"' in message and "method, shots" in message
    nested = '{"results": [{"backend": "a", "counts": {"00": 1}, "readout_errors": [{"p01": 0.1}]}]}'
    message = assert_envelope(call(envoy, "POST", "/api/v2/network/aggregate", nested), 400, "INVALID_ARGUMENT")
    assert '"p01"' in message and "results[0].readout_errors[0]" in message and "prob_meas1_prep0" in message
    assert len(upstreams.aggregation.requests) == before  # refused at the edge


def test_known_fields_in_either_json_spelling_pass_untouched(envoy, upstreams):
    body = {"results": [{"backend": "a", "counts": {"00": 7, "11": 3},
                         "readoutErrors": [{"prob_meas1_prep0": 0.01, "probMeas0Prep1": 0.02}]}],
            "method": "median", "shots": 10, "max_divergence": 0.4, "mitigate": True}
    reply = call(envoy, "POST", "/api/v2/network/aggregate", json.dumps(body))
    assert reply.status == 200, reply.text
    assert reply.body["data"]["aggregated_counts"] == {"00": 7, "11": 3}
    assert reply.body["data"]["mitigated"] is True and reply.body["data"]["aggregation_confidence"] == 0
    received = upstreams.aggregation.requests[-1]
    assert received.results[0].readout_errors[0].prob_meas0_prep1 == 0.02 and received.max_divergence == 0.4


def test_unknown_query_parameter_is_400(envoy):
    message = assert_envelope(call(envoy, "GET", "/api/v2/network/backends/ok?verbose=1"), 400, "INVALID_ARGUMENT")
    assert "verbose" in message


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v2/network/nothing"), ("DELETE", "/api/v2/network/backends/ok"), ("GET", "/"),
    ("POST", "/qnet.backends.v1.BackendService/GetBackend"),  # the gRPC path, but not gRPC
])
def test_unknown_routes_are_404(envoy, method, path):
    message = assert_envelope(call(envoy, method, path), 404, "NOT_FOUND")
    assert path in message and method in message


def test_a_service_that_is_down_is_503(envoy):
    assert "retry" in assert_envelope(call(envoy, "GET", "/api/v2/network/status"), 503, "UNAVAILABLE")


def test_native_grpc_through_the_same_port_is_left_alone(envoy):
    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{envoy.http_port}") as channel:
            stub = bk_grpc.BackendServiceStub(channel)
            assert (await stub.GetBackend(bk.GetBackendRequest(id="ok"))).data.num_qubits == 5
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetBackend(bk.GetBackendRequest(id="missing"))
            status = rpc_status.from_call(raised.value)
            info = error_details_pb2.ErrorInfo()
            assert status.code == code_pb2.NOT_FOUND and status.details[0].Unpack(info)
            assert info.reason == "BACKEND_NOT_FOUND"

    asyncio.run(run())


async def test_the_stream_route_upgrades_to_a_websocket(envoy):
    async with connect(f"ws://127.0.0.1:{envoy.http_port}/api/v2/network/stream?since=3") as ws:
        assert json.loads(await ws.recv()) == {"path": "/api/v2/network/stream?since=3"}
        await ws.send('{"subscribe": ["job_updates"]}')
        assert await ws.recv() == '{"subscribe": ["job_updates"]}'
        await asyncio.sleep(0.2)
        await ws.send("still open")
        assert await ws.recv() == "still open"


def test_a_plain_request_to_the_stream_route_gets_the_envelope(envoy):
    message = assert_envelope(call(envoy, "GET", "/api/v2/network/stream"), 426, "UPGRADE_REQUIRED")
    assert "WebSocket" in message


def test_a_slow_service_is_504_after_the_route_timeout_and_envoys_run_side_by_side(envoy, upstreams, tmp_path):
    quick = start_envoy(upstreams, tmp_path, route_timeout_s=1)
    try:
        assert quick.http_port != envoy.http_port and quick.admin_port != envoy.admin_port
        message = assert_envelope(call(quick, "GET", "/api/v2/network/backends/slow"), 504, "DEADLINE_EXCEEDED")
        assert "retry" in message
    finally:
        quick.stop()
    assert quick.process.returncode is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", quick.http_port), timeout=2):
        pass
