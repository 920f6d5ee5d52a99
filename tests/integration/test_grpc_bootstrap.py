"""The shared server bootstrap on a real grpc.aio server (port 0): auth, error mapping, health, reflection."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from qnet.network.v1 import network_service_pb2 as nw
from qnet.network.v1 import network_service_pb2_grpc as nw_grpc

from qnet_common.db import Database
from qnet_common.grpcserver import create_server
from qnet_common.keys import ApiKeyStore
from qnet_common.settings import NetworkSettings, Settings
from services.network.main import NetworkComponent

ROOT = pathlib.Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def network(sqlite_url):
    keys = ApiKeyStore(Database(sqlite_url))
    _, secret = keys.create("tester")
    dead = f"127.0.0.1:{closed_port()}"
    settings = NetworkSettings(database_url=sqlite_url, service_key="mesh-secret", scheduler_addr=dead)
    component = NetworkComponent(settings)
    server, port, health = await create_server(settings, "network", component, keys)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, secret
    await channel.close()
    await server.stop(0)
    await component.stop(0)


def handled(code: str) -> float:
    return REGISTRY.get_sample_value(
        "qnet_grpc_server_handled_total", {"service": "network", "method": "GetStatus", "code": code}
    ) or 0.0


async def test_a_call_without_a_key_is_unauthenticated_with_error_info_and_envelope(network):
    channel, _ = network
    before = handled("UNAUTHENTICATED")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await nw_grpc.NetworkServiceStub(channel).GetStatus(nw.GetStatusRequest())
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert info.reason == "UNAUTHENTICATED" and info.domain == "qnet.softquantus.com"
    envelope = dict(error.trailing_metadata())["qnet-error-envelope"]
    assert json.loads(envelope) == {"success": False, "error": {"code": "UNAUTHENTICATED", "message": status.message}}
    assert handled("UNAUTHENTICATED") == before + 1


async def test_a_wrong_key_is_refused_and_a_stored_key_accepted(network):
    channel, secret = network
    stub = nw_grpc.NetworkServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetStatus(nw.GetStatusRequest(), metadata=(("authorization", "Bearer qnet_wrong"),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = await stub.GetStatus(nw.GetStatusRequest(), metadata=(("authorization", f"Bearer {secret}"),))
    # The backends service is down in this test: the network reports an outage, it does not fail.
    assert reply.success and reply.data.overall_status == "outage" and reply.data.total_capacity == 0


async def test_the_mesh_service_key_is_accepted(network):
    channel, _ = network
    reply = await nw_grpc.NetworkServiceStub(channel).GetStatus(
        nw.GetStatusRequest(), metadata=(("authorization", "Bearer mesh-secret"),)
    )
    assert reply.success


async def test_health_and_reflection_stay_open(network):
    channel, _ = network
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        assert "qnet.network.v1.NetworkService" in names
        break


class Undeclared:
    """A component that registers handlers no proto declares: a unary RPC and a client-streaming one."""

    service_names = ("qnet.test.v1.Undeclared",)

    def register(self, server) -> None:
        async def echo(request: bytes, context) -> bytes:
            self.ran = True
            return request

        async def gather(requests, context) -> bytes:
            self.ran = True
            return b"".join([r async for r in requests])

        self.ran = False
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("qnet.test.v1.Undeclared", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Gather": grpc.stream_unary_rpc_method_handler(gather),
        })])

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None


@pytest.fixture
async def undeclared(sqlite_url):
    settings = Settings(database_url=sqlite_url, service_key="mesh-secret")
    component = Undeclared()
    server, port, _ = await create_server(settings, "test", component, ApiKeyStore(Database(sqlite_url)))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, component
    await channel.close()
    await server.stop(0)


async def test_an_rpc_no_proto_declares_is_refused_even_to_the_mesh(undeclared):
    channel, component = undeclared
    mesh = (("authorization", "Bearer mesh-secret"),)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary("/qnet.test.v1.Undeclared/Echo")(b"hi", metadata=mesh)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "declares no access" in raised.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.stream_unary("/qnet.test.v1.Undeclared/Gather")(iter([b"a", b"b"]), metadata=mesh)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "client-streaming RPCs are not served" in raised.value.details()
    assert component.ran is False


@pytest.mark.parametrize("authorization", ["Basic mesh-secret", "bearer", "Bearer", "Token mesh-secret",
                                           "mesh-secret"])
async def test_a_key_in_any_other_form_than_bearer_is_unauthenticated(network, authorization):
    channel, _ = network
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await nw_grpc.NetworkServiceStub(channel).GetStatus(nw.GetStatusRequest(),
                                                            metadata=(("authorization", authorization),))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_what_a_service_builds_at_start_is_out_of_the_collectors_reach():
    """A full garbage collection walks every tracked object: in a backends process 250,000 of them from Qiskit's
    and Braket's modules, an 86 ms pause every few hundred tasks. Each service freezes what it built at start
    (freeze_startup, called by the bootstrap once the component is built): a full collection then walks only
    what was made since."""
    script = (
        "import gc, sys\n"
        "from services.backends.adapters.registry import build_devices\n"
        "from qnet_common.grpcserver import freeze_startup\n"
        "build_devices(['ionq_simulator', 'local_simulator'])\n"
        "before = len(gc.get_objects())\n"
        "frozen = freeze_startup()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"})
    assert done.returncode == 0, done.stderr
    before, frozen, walked = map(int, done.stdout.split())
    assert before > 100_000 and frozen > 0.9 * before and walked < 0.02 * before
