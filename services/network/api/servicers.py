"""The network service's servicer: status, metrics, topology and cost estimates. Thin by design."""

from __future__ import annotations

import asyncio
import time

from qnet.backends.v1 import backend_service_pb2 as bs
from qnet.backends.v1 import backend_service_pb2_grpc as bs_grpc
from qnet.backends.v1 import backends_pb2 as bs_pb2
from qnet.network.v1 import network_service_pb2 as nw
from qnet.network.v1 import network_service_pb2_grpc as nw_grpc
from qnet.scheduler.v1 import execution_service_pb2 as ex

from qnet_common.coalesce import Coalesced
from qnet_common.envoy import EDGE_HEADER
from services.network.adapters.mesh_view import MeshView
from services.network.domain.status import BackendLine, network_status, percentile

#: The services of the mesh, as they register.
SERVICES = ("scheduler", "backends", "aggregator", "network", "gateway")
#: Replicas whose lease lapsed (they died) stay on the topology this long, marked gone.
GONE_SHOWN_S = 300.0
#: POST /estimate's strategy when the request names none (the spec: estimate execution cost).
DEFAULT_ESTIMATE_STRATEGY = "cost_optimized"
#: Every price is in US dollars.
CURRENCY = "USD"


class NetworkServicer(nw_grpc.NetworkServiceServicer):
    def __init__(self, mesh: MeshView) -> None:
        self._mesh = mesh
        # Concurrent status requests share one count (never one begun before they asked).
        self._active_jobs = Coalesced(lambda: asyncio.to_thread(mesh.stats.active_jobs))

    async def GetStatus(self, request, context):
        (devices, reachable), active = await asyncio.gather(self._mesh.devices_or_empty(), self._active_jobs.get())
        lines = [BackendLine(d.id, d.status, d.queue_depth, d.num_qubits) for d in devices]
        found = network_status(lines, active, reachable)
        return nw.GetStatusResponse(
            success=True,
            data=nw.NetworkStatus(
                overall_status=found.overall_status,
                total_capacity=found.total_capacity,
                active_jobs=found.active_jobs,
                backends=[nw.BackendStatus(id=b.id, status=b.status, queue_depth=b.queue_depth)
                          for b in found.backends],
            ),
        )

    async def GetMetrics(self, request, context):
        stats = await asyncio.to_thread(self._mesh.stats.stats)
        data = nw.NetworkMetrics(
            jobs_by_status=stats.jobs_by_status,
            throughput=[
                nw.Throughput(window_minutes=w, jobs=n, jobs_per_minute=n / w) for w, n in stats.finished_in.items()
            ],
            shots_executed=stats.shots_executed,
            cost_spent=round(stats.cost_spent, 6),
            currency=CURRENCY,
        )
        for backend, b in sorted(stats.backends.items()):
            data.backends.add(
                backend=backend, runs=b.runs, success_rate=b.completed / b.runs if b.runs else 0.0,
                queue_time_p50_s=percentile(b.queue_times, 50), queue_time_p95_s=percentile(b.queue_times, 95),
                execution_time_p50_s=percentile(b.execution_times, 50),
                execution_time_p95_s=percentile(b.execution_times, 95), shots=b.shots,
            )
        return nw.GetMetricsResponse(success=True, data=data)

    async def GetTopology(self, request, context):
        (devices, _), replicas = await asyncio.gather(self._mesh.devices_or_empty(), self._mesh.replicas())
        now = time.time()
        shown = [(i, health) for i, health in replicas if i.live(now) or now - i.expires_at < GONE_SHOWN_S]
        topology = nw.Topology()
        # Envoy adds the address the client reached it at; called over gRPC directly there is no edge.
        edge = dict(context.invocation_metadata() or ()).get(EDGE_HEADER, "")
        topology.nodes.add(id="envoy", kind="service", status="serving" if edge else "unknown", address=edge)
        for service in SERVICES:
            mine = [(i, health) for i, health in shown if i.service == service]
            serving = [i.address for i, health in mine if health == "serving"]
            topology.nodes.add(id=service, kind="service", status="serving" if serving else "not_serving",
                               address=",".join(serving))
            for instance, health in mine:
                topology.nodes.add(id=instance.instance_id, kind="replica", status=health, address=instance.address)
                topology.links.add(source=service, target=instance.instance_id, protocol="replica")
        for d in devices:
            topology.nodes.add(
                id=d.id, kind="backend", status=d.status, provider=d.provider, num_qubits=d.num_qubits,
                connectivity=d.connectivity, coupling_edges=len(d.coupling_map),
            )
            topology.links.add(source="backends", target=d.id, protocol="device")
            for instance, health in shown:
                if d.id in instance.devices and health == "serving":
                    topology.links.add(source=instance.instance_id, target=d.id, protocol="device")
        for source, target, protocol in MeshView.LINKS:
            topology.links.add(source=source, target=target, protocol=protocol)
        return nw.GetTopologyResponse(success=True, data=topology)

    async def EstimateCost(self, request, context):
        plan = await self._mesh.plan(ex.PlanJobRequest(
            qasm=request.qasm, backends=list(request.backends), strategy=request.strategy, shots=request.shots,
            default_strategy=DEFAULT_ESTIMATE_STRATEGY))
        estimate = nw.CostEstimate(strategy=plan.strategy, shots=plan.shots, currency=CURRENCY,
                                   selected=list(plan.selected), total_cost=plan.total_cost)
        for b in plan.backends:
            estimate.backends.add(backend=b.backend, cost=b.cost, estimated_execution_s=b.estimated_execution_s,
                                  eligible=b.eligible, note=b.note)
        return nw.EstimateCostResponse(success=True, data=estimate)


class BackendCatalogueServicer(bs_grpc.BackendServiceServicer):
    """The public BackendService for the whole network: the list merged from every backends replica, and each
    backend's details from a replica that serves it (the adapters answer for their own devices only)."""

    def __init__(self, mesh: MeshView) -> None:
        self._mesh = mesh
        self._router = mesh.router

    async def ListBackends(self, request, context):
        listed = []
        for device in await self._mesh.devices():
            summary = bs_pb2.Backend()
            summary.CopyFrom(device)
            summary.ClearField("coupling_map")
            listed.append(summary)
        return bs.ListBackendsResponse(success=True, data=listed)

    async def GetBackend(self, request, context):
        return await self._router.on_device(request.id, lambda stub: stub.GetBackend(request, timeout=10))

    async def GetCalibration(self, request, context):
        return await self._router.on_device(request.id, lambda stub: stub.GetCalibration(request, timeout=10))

    async def GetQueue(self, request, context):
        return await self._router.on_device(request.id, lambda stub: stub.GetQueue(request, timeout=10))
