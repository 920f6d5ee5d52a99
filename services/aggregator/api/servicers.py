"""The aggregator's servicer: request protos -> the aggregation maths -> response protos."""

from __future__ import annotations

import asyncio

from qnet.aggregator.v1 import aggregation_service_pb2 as ag
from qnet.aggregator.v1 import aggregation_service_pb2_grpc as ag_grpc

from services.aggregator.domain.aggregation import (
    DEFAULT_MAX_DIVERGENCE,
    METHODS,
    BackendCounts,
    aggregate,
)
from services.aggregator.metrics import AGGREGATIONS


class AggregationServicer(ag_grpc.AggregationServiceServicer):
    async def Aggregate(self, request, context):
        results = [
            BackendCounts(
                backend=r.backend or f"result_{i}",
                counts=dict(r.counts),
                shots=r.shots or None,
                fidelity=r.fidelity or None,
                readout_errors=[(e.prob_meas1_prep0, e.prob_meas0_prep1) for e in r.readout_errors] or None,
            )
            for i, r in enumerate(request.results)
        ]
        method = request.method or "weighted_average"
        try:
            # Large inputs (2^16 outcomes) take milliseconds of numpy: off the event loop.
            found = await asyncio.to_thread(
                aggregate, results, method, request.shots or None,
                request.max_divergence or DEFAULT_MAX_DIVERGENCE, request.mitigate,
            )
        except Exception as error:
            AGGREGATIONS.labels(method, getattr(error, "code", "INTERNAL")).inc()
            raise
        AGGREGATIONS.labels(method, "OK").inc()
        return ag.AggregateResponse(
            success=True,
            data=ag.AggregationResult(
                method=found.method,
                aggregated_counts=found.counts,
                aggregation_confidence=found.confidence,
                shots=found.shots,
                backends=[ag.BackendWeight(backend=w.backend, weight=w.weight, distance=w.distance)
                          for w in found.weights],
                probabilities=found.probabilities,
                mitigated=found.mitigated,
                mitigated_counts=[ag.BackendCounts(backend=b, counts=c) for b, c in found.mitigated_counts.items()],
            ),
        )

    async def ListMethods(self, request, context):
        return ag.ListMethodsResponse(
            success=True,
            data=[
                ag.AggregationMethod(
                    name=info.name,
                    description=info.description,
                    parameters=[ag.MethodParameter(name=n, type=t, description=d) for n, t, d in info.parameters],
                )
                for info in METHODS.values()
            ],
        )
