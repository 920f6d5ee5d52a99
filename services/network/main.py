"""The network service: status, metrics, topology, cost estimates and the backend catalogue over the live mesh."""

from __future__ import annotations

from qnet.backends.v1 import backend_service_pb2, backend_service_pb2_grpc
from qnet.network.v1 import network_service_pb2, network_service_pb2_grpc

from qnet_common.grpcserver import serve
from qnet_common.settings import NetworkSettings
from services.network.adapters.mesh_view import MeshView
from services.network.api.servicers import BackendCatalogueServicer, NetworkServicer


class NetworkComponent:
    service_names = (
        network_service_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name,
        backend_service_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name,
    )

    def __init__(self, settings: NetworkSettings) -> None:
        self._mesh = MeshView(settings)

    def register(self, server) -> None:
        network_service_pb2_grpc.add_NetworkServiceServicer_to_server(NetworkServicer(self._mesh), server)
        backend_service_pb2_grpc.add_BackendServiceServicer_to_server(BackendCatalogueServicer(self._mesh), server)

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        await self._mesh.close()


async def build(settings: NetworkSettings) -> NetworkComponent:
    # gRPC channels must be made on the running loop; the schema migration is quick.
    return NetworkComponent(settings)


def main() -> None:
    serve("network", build)


if __name__ == "__main__":
    main()
