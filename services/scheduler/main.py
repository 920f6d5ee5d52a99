"""The scheduler service: durable jobs, strategies and the event stream, wired to its adapters."""

from __future__ import annotations

from collections.abc import Callable

from qnet.scheduler.v1 import (
    execution_service_pb2,
    execution_service_pb2_grpc,
    job_events_service_pb2,
    job_events_service_pb2_grpc,
)

from qnet_common.db import Database
from qnet_common.device_router import DeviceRouter
from qnet_common.device_status import StatusStore
from qnet_common.events import EventHub
from qnet_common.grpcserver import serve
from qnet_common.registry import Registry
from qnet_common.settings import SchedulerSettings
from services.scheduler.adapters.clients import AggregatorClient, DeviceClient
from services.scheduler.adapters.job_store import JobStore
from services.scheduler.api.servicers import ExecutionServicer, JobEventsServicer
from services.scheduler.domain.engine import Engine
from services.scheduler.metrics import record_job


class SchedulerComponent:
    service_names = (
        execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
        job_events_service_pb2.DESCRIPTOR.services_by_name["JobEventsService"].full_name,
    )

    def __init__(self, settings: SchedulerSettings) -> None:
        self._settings = settings
        self._db = Database.shared(settings.db_url)
        self.store = JobStore(self._db)
        self._router = DeviceRouter(Registry(self._db), settings.service_key, StatusStore(self._db))
        self._devices = DeviceClient(self._router)
        self._aggregator = AggregatorClient(settings.aggregator_addr, settings.service_key)
        self.hub = EventHub(self.store.events)
        # Every job event of any replica reaches `announced` (follow_announcements): no request polls its job.
        self.engine = Engine(
            self.store, self._devices, self._aggregator, workers=settings.workers, lease_s=settings.lease_s,
            on_job=record_job, notified=True,
        )

    def register(self, server) -> None:
        execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server(
            ExecutionServicer(self.engine, self._settings.execute_wait_s), server
        )
        job_events_service_pb2_grpc.add_JobEventsServiceServicer_to_server(
            JobEventsServicer(self.hub), server
        )

    async def start(self) -> None:
        # A status change made through any replica: the next choice of backends reads the devices afresh.
        follow_announcements(self.hub, self.engine, self._db.dialect, on_backend_status=self._router.invalidate)
        await self.hub.start()
        self.engine.start()

    async def stop(self, grace: float) -> None:
        self.hub.end_watches()  # the bridges resume on another replica instead of waiting out the grace
        await self.engine.stop(grace)
        await self.hub.stop()
        await self._router.close()
        await self._aggregator.close()
        self._db.close()


def follow_announcements(hub: EventHub, engine: Engine, dialect: str,
                         on_backend_status: Callable[[], None] = lambda: None) -> None:
    """Hands the engine every job event any replica commits, and calls `on_backend_status` at each device status
    change. PostgreSQL announces each event (NOTIFY "topic:status:job_id", through the hub to `on_announce`;
    the hub then reads the log only for its watchers); on SQLite, which announces nothing, the hub's reads of
    the log bring them (every EventHub.POLL_S, at once for this process's own commits)."""
    def announced(topic: str, status: str, job_id: str) -> None:
        if topic == "backend_status":
            on_backend_status()
        engine.announced(topic, status, job_id)

    if dialect == "postgresql":
        def notified(payload: str) -> None:
            topic, _, rest = payload.partition(":")
            status, _, job_id = rest.partition(":")
            announced(topic, status, job_id)

        hub.on_announce = notified
    else:
        hub.on_event = lambda event: announced(event.topic, event.status, event.job_id)


async def build(settings: SchedulerSettings) -> SchedulerComponent:
    # gRPC channels must be made on the running loop; the schema migration is quick.
    return SchedulerComponent(settings)


def main() -> None:
    serve("scheduler", build)


if __name__ == "__main__":
    main()
