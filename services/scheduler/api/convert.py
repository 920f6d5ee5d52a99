"""Scheduler domain objects -> protos."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from qnet.scheduler.v1 import execution_service_pb2 as ex
from qnet.scheduler.v1 import jobs_pb2 as pb

from services.scheduler.domain.jobs import Job
from services.scheduler.domain.planning import Plan


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job(job: Job) -> pb.Job:
    outcome = job.outcome
    message = pb.Job(
        job_id=job.job_id,
        status=job.status,
        strategy=job.request.strategy,
        shots=job.request.shots,
        backends=list(job.request.backends),
        batch_id=job.batch_id,
        created_at=_ts(job.created_at),
        finished_at=_ts(job.finished_at),
    )
    if outcome is None:
        return message
    message.backend = outcome.backend
    message.counts.update(outcome.counts)
    message.queue_time_s = round(outcome.queue_time_s, 6)
    message.execution_time_s = round(outcome.execution_time_s, 6)
    message.aggregated_counts.update(outcome.aggregated_counts)
    message.aggregation_confidence = outcome.aggregation_confidence
    message.aggregation_method = outcome.aggregation_method
    for run in outcome.runs:
        entry = message.results.add(
            backend=run.backend, status=run.status, queue_time_s=round(run.queue_time_s, 6),
            execution_time_s=round(run.execution_time_s, 6), compiled_depth=run.compiled_depth,
            two_qubit_gates=run.two_qubit_gates, attempts=run.attempts,
        )
        entry.counts.update(run.counts)
        if run.error_code:
            entry.error.CopyFrom(pb.JobError(code=run.error_code, message=run.error_message))
    if outcome.selection is not None:
        s = outcome.selection
        message.selection.CopyFrom(pb.Selection(
            strategy=s.strategy, metric=s.metric, reason=s.reason,
            scores=[pb.BackendScore(backend=x.backend, score=x.score, eligible=x.eligible, note=x.note)
                    for x in s.scores],
        ))
    if outcome.error_code:
        message.error.CopyFrom(pb.JobError(code=outcome.error_code, message=outcome.error_message))
    return message


def plan(found: Plan) -> ex.PlanJobResponse:
    reply = ex.PlanJobResponse(strategy=found.request.strategy, shots=found.request.shots,
                               selected=list(found.runs), total_cost=round(found.total_cost, 6))
    for candidate in found.candidates:
        assessment = found.assessments.get(candidate.backend)
        reply.backends.add(backend=candidate.backend, cost=round(assessment.cost, 6) if assessment else 0.0,
                           estimated_execution_s=assessment.estimated_execution_s if assessment else 0.0,
                           eligible=candidate.eligible, note=candidate.why_not)
    return reply
