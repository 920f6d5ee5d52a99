"""The aggregator service: combines several backends' counts into one answer with a confidence."""

from __future__ import annotations

from qnet.aggregator.v1 import aggregation_service_pb2, aggregation_service_pb2_grpc

from qnet_common.grpcserver import serve
from qnet_common.settings import Settings
from services.aggregator.api.servicers import AggregationServicer


class AggregatorComponent:
    service_names = (aggregation_service_pb2.DESCRIPTOR.services_by_name["AggregationService"].full_name,)

    def register(self, server) -> None:
        aggregation_service_pb2_grpc.add_AggregationServiceServicer_to_server(AggregationServicer(), server)

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None


async def build(settings: Settings) -> AggregatorComponent:
    return AggregatorComponent()


def main() -> None:
    serve("aggregator", build)


if __name__ == "__main__":
    main()
