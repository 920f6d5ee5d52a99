"""Every RPC of every service declares who may call it, and the shared interceptor enforces exactly that: each
RPC is called directly over gRPC (no Envoy) with each class of key. The RPCs come from the descriptor set, so a
new RPC is covered the day it is added (and refused until it declares its access)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from qnet.aggregator.v1 import aggregation_service_pb2  # noqa: F401 - registers the descriptors
from qnet.backends.v1 import backend_service_pb2, device_service_pb2  # noqa: F401
from qnet.common.v1 import access_pb2
from qnet.network.v1 import network_service_pb2  # noqa: F401
from qnet.scheduler.v1 import execution_service_pb2, job_events_service_pb2  # noqa: F401

from tests.e2e.conftest import DEV_KEY, ROOT, SERVICE_KEY

#: Which service of the mesh serves each gRPC service (the network service serves the public catalogue).
SERVED_BY = {
    "qnet.scheduler.v1.ExecutionService": "scheduler",
    "qnet.scheduler.v1.JobEventsService": "scheduler",
    "qnet.backends.v1.DeviceService": "backends",
    "qnet.backends.v1.BackendService": "network",
    "qnet.aggregator.v1.AggregationService": "aggregator",
    "qnet.network.v1.NetworkService": "network",
}


def rpcs() -> list[tuple[str, str, bool, int]]:
    """(service, method, server-streaming, declared access) of every RPC in the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "qnet.pb").read_bytes()).file
    found = []
    for file in files:
        if not file.package.startswith("qnet."):
            continue
        for service in file.service:
            for method in service.method:
                access = method.options.Extensions[access_pb2.access]
                found.append((f"{file.package}.{service.name}", method.name, method.server_streaming, access))
    return found


def test_every_rpc_declares_its_access_and_every_service_is_known():
    found = rpcs()
    assert len(found) >= 20
    assert {access for *_, access in found} <= {access_pb2.ACCESS_PUBLIC, access_pb2.ACCESS_OPERATOR,
                                                access_pb2.ACCESS_INTERNAL}
    assert {service for service, *_ in found} == set(SERVED_BY)


def call(address: str, service: str, method: str, streaming: bool, key: str | None,
         extra: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    request = message_factory.GetMessageClass(descriptor.input_type)()
    response = message_factory.GetMessageClass(descriptor.output_type)
    metadata = ((("authorization", f"Bearer {key}"),) if key else ()) + extra
    with grpc.insecure_channel(address) as channel:
        path = f"/{service}/{method}"
        try:
            if streaming:
                stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                              response_deserializer=response.FromString)
                next(iter(stream(request, metadata=metadata, timeout=1.5)))
            else:
                channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                    response_deserializer=response.FromString)(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("service,method,streaming,access", rpcs(), ids=lambda v: str(v))
def test_each_rpc_admits_exactly_the_callers_its_access_names(mesh, service, method, streaming, access):
    address = mesh.replicas(SERVED_BY[service])[0]
    operator = mesh.create_key("operator", admin=True)
    refused = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    assert call(address, service, method, streaming, None) == grpc.StatusCode.UNAUTHENTICATED
    assert call(address, service, method, streaming, "not-a-key") == grpc.StatusCode.UNAUTHENTICATED
    admitted = {
        "user": access == access_pb2.ACCESS_PUBLIC,
        "operator": access in (access_pb2.ACCESS_PUBLIC, access_pb2.ACCESS_OPERATOR),
        "mesh": True,
    }
    for who, key in (("user", DEV_KEY), ("operator", operator), ("mesh", SERVICE_KEY)):
        code = call(address, service, method, streaming, key)
        if admitted[who]:  # the handler ran: any answer but a refusal (an empty request is often invalid)
            assert code not in refused, (who, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (who, code)


@pytest.mark.parametrize("service,method,streaming,access",
                         [r for r in rpcs() if r[3] != access_pb2.ACCESS_PUBLIC], ids=lambda v: str(v))
def test_a_user_key_claiming_to_act_for_someone_is_still_refused_what_it_may_not_call(mesh, service, method,
                                                                                      streaming, access):
    """Only the mesh's own key may say on whose behalf it calls; with a user's key the claim changes nothing."""
    address = mesh.replicas(SERVED_BY[service])[0]
    spoofed = (("qnet-on-behalf-of", "someone_else"), ("x-qnet-caller", "scheduler"))
    assert call(address, service, method, streaming, DEV_KEY, spoofed) == grpc.StatusCode.PERMISSION_DENIED
