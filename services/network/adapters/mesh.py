"""The network service's view of the mesh: the backends' devices, the services' health, the job store."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qnet.backends.v1 import device_service_pb2 as ds
from qnet.backends.v1 import device_service_pb2_grpc as ds_grpc

from qnet_common.db import Database
from qnet_common.grpcclient import channel, to_qnet_error
from qnet_common.settings import Settings
from services.network.adapters.job_stats import JobStats


class Mesh:
    #: The mesh's own links: (from, to, protocol).
    LINKS = (
        ("envoy", "scheduler", "grpc"), ("envoy", "backends", "grpc"), ("envoy", "aggregator", "grpc"),
        ("envoy", "network", "grpc"), ("envoy", "gateway", "http"), ("gateway", "scheduler", "grpc"),
        ("scheduler", "backends", "grpc"), ("scheduler", "aggregator", "grpc"), ("network", "backends", "grpc"),
    )

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        #: This service's own bound address (set once the server has bound its port).
        self.own_address = settings.network_addr
        self._db = Database(settings.db_url)
        self.stats = JobStats(self._db)
        self._channel = channel(settings.backends_addr, settings.service_key)
        self._devices = ds_grpc.DeviceServiceStub(self._channel)
        self._health_channels = {
            name: grpc.aio.insecure_channel(address)
            for name, address in (
                ("scheduler", settings.scheduler_addr), ("backends", settings.backends_addr),
                ("aggregator", settings.aggregator_addr),
            )
        }

    async def devices(self) -> list:
        try:
            response = await self._devices.ListDevices(ds.ListDevicesRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            raise to_qnet_error(error) from None
        return list(response.devices)

    async def devices_or_empty(self) -> tuple[list, bool]:
        """The devices, and False when the backends service cannot be reached (status shows an outage)."""
        try:
            return await self.devices(), True
        except Exception:
            return [], False

    async def assess(self, names: list[str], qasm: str, shots: int) -> dict:
        try:
            response = await self._devices.AssessCircuit(
                ds.AssessCircuitRequest(device_ids=names, qasm=qasm, shots=shots), timeout=60
            )
        except grpc.aio.AioRpcError as error:
            raise to_qnet_error(error) from None
        return {a.device_id: a for a in response.assessments}

    def peek_turn(self, rotation: str) -> int:
        """The round_robin turn the next job over these backends will take (read only)."""
        try:
            rows = self._db.query("SELECT turn FROM round_robin WHERE rotation = ?", (rotation,))
        except Exception:
            return 0
        return int(rows[0]["turn"]) + 1 if rows else 0

    async def service_health(self) -> dict[str, tuple[str, str]]:
        names = list(self._health_channels)
        checks = await asyncio.gather(*(self._grpc_health(self._health_channels[n]) for n in names))
        result = {
            name: (address, health)
            for name, address, health in zip(
                names, [self._address(n) for n in names], checks, strict=True
            )
        }
        # This service is answering the request: serving by definition.
        result["network"] = (self.own_address, "serving")
        result["gateway"] = (self._settings.gateway_addr, await asyncio.to_thread(
            _http_health, f"http://{self._settings.gateway_addr}/healthz"))
        result["envoy"] = (self._settings.envoy_addr, "unknown")
        return result

    def _address(self, name: str) -> str:
        return getattr(self._settings, f"{name}_addr")

    @staticmethod
    async def _grpc_health(ch: grpc.aio.Channel) -> str:
        try:
            response = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return "not_serving"
        return "serving" if response.status == health_pb2.HealthCheckResponse.SERVING else "not_serving"

    async def close(self) -> None:
        await self._channel.close()
        for ch in self._health_channels.values():
            await ch.close()
        self._db.close()


def _http_health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return "serving" if response.status == 200 else "not_serving"
    except Exception:
        return "not_serving"
