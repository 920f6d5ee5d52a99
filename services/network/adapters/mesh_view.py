"""The network service's view of the mesh: the registry's replicas and devices, their health, the job store."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc

from qnet_common.db import Database
from qnet_common.device_router import DeviceRouter
from qnet_common.device_status import StatusStore
from qnet_common.grpcclient import channel, to_qnet_error
from qnet_common.registry import Instance, Registry
from qnet_common.settings import NetworkSettings
from services.network.adapters.job_stats import JobStats

#: A plan checks the circuit on every candidate: the scheduler bounds that (SUBMIT_CHECK_S, 10 s); this is more.
PLAN_TIMEOUT_S = 20.0


class MeshView:
    #: The mesh's own links between services: (from, to, protocol).
    LINKS = (
        ("envoy", "scheduler", "grpc"), ("envoy", "network", "grpc"), ("envoy", "aggregator", "grpc"),
        ("envoy", "gateway", "http"), ("gateway", "scheduler", "grpc"), ("scheduler", "backends", "grpc"),
        ("scheduler", "aggregator", "grpc"), ("network", "backends", "grpc"), ("network", "scheduler", "grpc"),
    )

    def __init__(self, settings: NetworkSettings) -> None:
        self._settings = settings
        self._db = Database.shared(settings.db_url)
        self.stats = JobStats(self._db)
        self.registry = Registry(self._db)
        self.router = DeviceRouter(self.registry, settings.service_key, StatusStore(self._db))
        self._scheduler_channel = channel(settings.scheduler_addr, settings.service_key)
        self._scheduler = ex_grpc.ExecutionServiceStub(self._scheduler_channel)
        self._health_channels: dict[str, grpc.aio.Channel] = {}

    async def devices(self) -> list:
        """The devices, with their statuses as stored now: an operator's change is seen at once (descriptions and
        queues as listed within LIST_TTL_S)."""
        return await self.router.devices_as_stored()

    async def devices_or_empty(self) -> tuple[list, bool]:
        """The devices, and False when no backends replica can be reached (status shows an outage)."""
        try:
            devices = await self.devices()
        except Exception:
            return [], False
        return devices, any(d.status != "offline" or d.num_qubits for d in devices)

    async def plan(self, request: ex.PlanJobRequest) -> ex.PlanJobResponse:
        """The scheduler's plan of a job (it owns the planning rule: one for submissions and estimates)."""
        try:
            return await self._scheduler.PlanJob(request, timeout=PLAN_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise to_qnet_error(error) from None

    async def replicas(self) -> list[tuple[Instance, str]]:
        """Every registered replica with its health now: serving, not_serving, or gone (its lease lapsed)."""
        instances = await asyncio.to_thread(self.registry.instances)
        now = time.time()
        checks = await asyncio.gather(*(self._health(i) if i.live(now) else _gone() for i in instances))
        return list(zip(instances, checks, strict=True))

    async def _health(self, instance: Instance) -> str:
        if instance.service == "gateway":
            return await asyncio.to_thread(_http_health, f"http://{instance.address}/healthz")
        ch = self._health_channels.get(instance.address)
        if ch is None:
            ch = self._health_channels[instance.address] = grpc.aio.insecure_channel(instance.address)
        try:
            response = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return "not_serving"
        return "serving" if response.status == health_pb2.HealthCheckResponse.SERVING else "not_serving"

    async def close(self) -> None:
        await self.router.close()
        await self._scheduler_channel.close()
        for ch in self._health_channels.values():
            await ch.close()
        self._db.close()


async def _gone() -> str:
    return "gone"


def _http_health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # an address from the registry
            return "serving" if response.status == 200 else "not_serving"
    except Exception:
        return "not_serving"
