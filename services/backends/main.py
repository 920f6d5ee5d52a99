"""The backends service: the devices' adapters behind BackendService (public) and DeviceService (internal)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from qnet.backends.v1 import (
    backend_service_pb2,
    backend_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
)

from qnet_common.db import Database
from qnet_common.device_status import StatusStore
from qnet_common.grpcserver import serve
from qnet_common.settings import BackendsSettings
from services.backends import metrics
from services.backends.adapters.registry import DEVICE_IDS, build_devices
from services.backends.api.servicers import BackendServicer, DeviceServicer
from services.backends.domain.fleet import Fleet

log = logging.getLogger(__name__)


class BackendsComponent:
    service_names = (
        backend_service_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name,
        device_service_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
    )

    def __init__(self, settings: BackendsSettings) -> None:
        self._db = Database.shared(settings.db_url)
        self._statuses = StatusStore(self._db)
        devices = build_devices(settings.devices or None)
        # A thread for every task the devices may run at once: no device's task waits for another device's.
        self._executor = ThreadPoolExecutor(max_workers=max(1, sum(d.spec.concurrent_tasks for d in devices.values())),
                                            thread_name_prefix="device")
        # Circuits are read and assessed on threads of their own: a burst of submissions (or of hostile texts)
        # cannot hold up device tasks, nor device tasks the submissions.
        self._reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="checks")
        stored = self._statuses.load()
        for device_id, status in settings.device_status.items():
            stored[device_id] = status  # the environment wins at start
        self.fleet = Fleet(
            devices, self._executor, stored, settings.faults, on_status=self._statuses.save, reader=self._reader,
            load_statuses=self._statuses.load, catalogue=DEVICE_IDS,
        )
        self._follower: asyncio.Task | None = None
        for device_id, status in settings.device_status.items():
            if device_id in devices:
                self._statuses.save(device_id, status)

    @property
    def registry_devices(self) -> tuple[str, ...]:
        """The devices this replica serves, as the mesh's registry lists them."""
        return tuple(self.fleet.devices)

    def register(self, server) -> None:
        metrics.watch(self.fleet)
        backend_service_pb2_grpc.add_BackendServiceServicer_to_server(BackendServicer(self.fleet), server)
        device_service_pb2_grpc.add_DeviceServiceServicer_to_server(
            DeviceServicer(self.fleet), server
        )

    async def start(self) -> None:
        self._follower = asyncio.create_task(self.fleet.follow_statuses())

    async def stop(self, grace: float) -> None:
        """Queued tasks are handed back (BACKEND_UNAVAILABLE: the scheduler runs them elsewhere); running ones
        finish within the server's grace; then the executors and the database close."""
        if self._follower is not None:
            self._follower.cancel()
        handed_back = self.fleet.begin_drain()
        log.info("draining: handed back %d queued tasks", handed_back)
        await asyncio.to_thread(self._executor.shutdown, wait=False, cancel_futures=True)
        await asyncio.to_thread(self._reader.shutdown, wait=False, cancel_futures=True)
        self._db.close()


async def build(settings: BackendsSettings) -> BackendsComponent:
    return await asyncio.to_thread(BackendsComponent, settings)


def main() -> None:
    serve("backends", build)


if __name__ == "__main__":
    main()
