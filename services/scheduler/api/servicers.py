"""The scheduler's servicers: public ExecutionService and internal JobEventsService. Thin by design."""

from __future__ import annotations

import asyncio

from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import execution_service_pb2_grpc as ex_grpc
from qnet.scheduler.v1 import job_events_service_pb2 as ev
from qnet.scheduler.v1 import job_events_service_pb2_grpc as ev_grpc
from qnet.scheduler.v1 import jobs_pb2

from qnet_common import errors
from qnet_common.events import TOPICS, Event, EventHub
from qnet_common.grpcserver import Caller, current_caller
from services.scheduler.api import convert
from services.scheduler.domain.engine import Engine
from services.scheduler.domain.jobs import FAILED, batch_status

#: Failures that make POST /execute answer with an error (the job, failed, stays readable).
_JOB_ERRORS = {"ALL_BACKENDS_FAILED": errors.AllBackendsFailed, "AGGREGATION_FAILED": errors.AggregationFailed,
               "NO_BACKENDS": errors.NoBackends}


def _caller() -> Caller:
    return current_caller.get(Caller("anonymous", "anonymous", internal=True))


def _owner_filter() -> str | None:
    """Internal callers without an on-behalf-of key see every job; a key sees its own."""
    caller = _caller()
    return None if caller.internal and caller.key_id == "mesh" else caller.key_id


def _metadata(context, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value
    return ""


class ExecutionServicer(ex_grpc.ExecutionServiceServicer):
    def __init__(self, engine: Engine, wait_s: float) -> None:
        self._engine = engine
        self._wait_s = wait_s

    async def Execute(self, request, context):
        job_request = await self._engine.validate(
            request.qasm, list(request.backends), request.strategy, request.shots, request.aggregate,
            request.aggregation_method,
        )
        caller = _caller()
        job = await self._engine.submit(
            caller.key_id, job_request,
            request_id=request.request_id or _metadata(context, "idempotency-key"),
            quota=(caller.shots_per_day, caller.cost_per_day),
        )
        if not request.return_immediately:
            job = await self._engine.wait(job.job_id, self._wait_s, submitted=job)
        if job.status == FAILED and job.outcome and job.outcome.error_code in _JOB_ERRORS:
            raise _JOB_ERRORS[job.outcome.error_code](
                f"{job.outcome.error_message} (job {job.job_id})", job_id=job.job_id
            )
        return ex.ExecuteResponse(success=True, data=convert.job(job))

    async def ExecuteBatch(self, request, context):
        caller = _caller()
        circuits = [{"qasm": c.qasm, "backends": list(c.backends or request.backends),
                     "strategy": c.strategy or request.strategy, "shots": c.shots or request.shots}
                    for c in request.circuits]
        batch_id = await self._engine.submit_batch(
            caller.key_id, circuits, request_id=request.request_id or _metadata(context, "idempotency-key"),
            quota=(caller.shots_per_day, caller.cost_per_day))
        batch = await self.GetBatch(ex.GetBatchRequest(batch_id=batch_id), context)
        return ex.ExecuteBatchResponse(success=True, data=batch.data)

    async def PlanJob(self, request, context):
        job_request = await self._engine.validate(request.qasm, list(request.backends), request.strategy,
                                                  request.shots, default_strategy=request.default_strategy or "fastest")
        return convert.plan(await self._engine.plan(job_request, peek_turn=True))

    async def GetBatch(self, request, context):
        found = await asyncio.to_thread(self._engine.store.batch, request.batch_id)
        owner = _owner_filter()
        if found is None or (owner is not None and found[0] != owner):
            raise errors.JobNotFound(f"batch {request.batch_id!r} not found")
        jobs = found[1]
        status = batch_status([j.status for j in jobs])
        return ex.GetBatchResponse(
            success=True,
            data=jobs_pb2.Batch(batch_id=request.batch_id, status=status, jobs=[convert.job(j) for j in jobs]),
        )

    async def GetJob(self, request, context):
        job = await self._engine.get(_owner_filter(), request.job_id)
        return ex.GetJobResponse(success=True, data=convert.job(job))

    async def CancelJob(self, request, context):
        job = await self._engine.cancel(_owner_filter(), request.job_id)
        return ex.CancelJobResponse(success=True, data=convert.job(job))


def _event_message(event: Event) -> ev.WatchEventsResponse:
    message = ev.WatchEventsResponse(
        event_id=event.event_id, topic=event.topic, job_id=event.job_id, status=event.status,
        backend=event.backend, queue_depth=event.queue_depth, owner=event.owner, error_code=event.error_code,
    )
    message.counts.update(event.counts)
    message.time.FromNanoseconds(int(event.time * 1e9))
    return message


class JobEventsServicer(ev_grpc.JobEventsServiceServicer):
    """Streams the durable event log: replay after `since_event_id`, then follow it live."""

    PAGE = 500
    MAX_PAGE = 5000

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    @staticmethod
    def _filter(topics_requested, owner_requested: str) -> tuple[set[str], str]:
        topics = set(topics_requested) or set(TOPICS)
        unknown = topics - set(TOPICS)
        if unknown:
            raise errors.InvalidArgument(f"unknown topics {sorted(unknown)}; use {', '.join(TOPICS)}")
        caller = _caller()
        owner = owner_requested if caller.internal and caller.key_id == "mesh" else caller.key_id
        return topics, owner

    @staticmethod
    def _wanted(event: Event, topics: set[str], owner: str) -> bool:
        return event.topic in topics and not (event.topic == "job_updates" and owner and event.owner != owner)

    async def WatchEvents(self, request, context):
        topics, owner = self._filter(request.topics, request.owner)
        async for event in self._hub.watch(request.since_event_id or None):
            if self._wanted(event, topics, owner):
                yield _event_message(event)

    async def ListEvents(self, request, context):
        topics, owner = self._filter(request.topics, request.owner)
        if request.limit < 0:
            raise errors.InvalidArgument(f"limit={request.limit}: give 1 to {self.MAX_PAGE}, or 0 for {self.PAGE}")
        limit = min(request.limit or self.PAGE, self.MAX_PAGE)
        scanned = await asyncio.to_thread(self._hub.log.since, request.since_event_id, limit)
        return ev.ListEventsResponse(
            events=[_event_message(e) for e in scanned if self._wanted(e, topics, owner)],
            last_event_id=scanned[-1].event_id if scanned else request.since_event_id,
            caught_up=len(scanned) < limit,
        )
