"""Channels from one service to another: the service key on every call, errors mapped back to QnetError."""

from __future__ import annotations

import json

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from qnet_common import errors
from qnet_common.grpcserver import ON_BEHALF_OF, current_caller


class _ServiceKey:
    """Adds `authorization: Bearer <service key>` and the caller's key id to every outgoing call."""

    def __init__(self, service_key: str) -> None:
        self._key = service_key

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {self._key}")
        caller = current_caller.get(None)
        if caller is not None and ON_BEHALF_OF not in metadata:
            metadata.add(ON_BEHALF_OF, caller.key_id)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )



# grpc.aio files an interceptor under the first call type it implements: one class per call type.
class _UnaryKey(_ServiceKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamKey(_ServiceKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


#: Calls spread over every address a target resolves to (`dns:///scheduler:50051` on Kubernetes,
#: `ipv4:127.0.0.1:50051,127.0.0.1:50061` on one machine), skipping replicas whose grpc.health.v1 is not SERVING.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})


def channel(address: str, service_key: str, *, balanced: bool = True) -> grpc.aio.Channel:
    """`balanced`: spread calls over the target's healthy addresses (SERVICE_CONFIG)."""
    options = [("grpc.max_receive_message_length", 32 * 1024 * 1024), ("grpc.enable_retries", 0)]
    if balanced:
        options.append(("grpc.service_config", SERVICE_CONFIG))
    return grpc.aio.insecure_channel(
        address, interceptors=[_UnaryKey(service_key), _StreamKey(service_key)], options=options)


def to_qnet_error(error: grpc.aio.AioRpcError) -> errors.QnetError:
    """The QnetError a remote service raised (its ErrorInfo reason), or BackendUnavailable-like fallbacks."""
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.reason in errors.BY_CODE:
                return errors.from_code(info.reason, status.message, **dict(info.metadata))
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.BackendUnavailable(f"service unreachable: {code.name}: {error.details()}")
    if code == grpc.StatusCode.CANCELLED:
        return errors.TaskCancelled("cancelled")
    return errors.Internal(f"{code.name}: {error.details()}")
