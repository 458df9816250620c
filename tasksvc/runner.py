"""The one function RQ calls: claim -> run -> succeed | retry | compensate.

`run_message(job_id)` is what a message names. It works on the context that
`bind(context)` installed when the worker process started (nothing is built at import).
The row decides what the message means: a waiting job is claimed and run; a job waiting
for compensation has its compensation claimed and run; anything else (cancelled,
finished, claimed by another worker, not due yet) makes the message a no-op.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from tasksvc import db, retry, store
from tasksvc.admission import QueueBound
from tasksvc.blocklist import SqlBlockList
from tasksvc.clock import rfc3339, utcnow
from tasksvc.errors import PermanentError
from tasksvc.jobtypes import Registry
from tasksvc.jobtypes.base import CompensationContext, JobType, RunContext
from tasksvc.metrics import Metrics
from tasksvc.models import CompensationStatus, JobStatus
from tasksvc.queue import MessageQueue

log = logging.getLogger("tasksvc.runner")
_MESSAGE_LIMIT = 2000


class AttemptTimeout(BaseException):
    """The attempt ran past its timeout (BaseException: a handler's `except Exception` can't eat it)."""


@dataclass
class WorkerContext:
    engine: Engine
    mq: MessageQueue
    registry: Registry
    metrics: Metrics
    policy: retry.RetryPolicy
    job_timeout_s: float
    worker_lost_timeout_s: float
    bound: QueueBound
    rng: random.Random = field(default_factory=random.Random)
    current: tuple[uuid.UUID, int, bool] | None = None  # (job, attempt, compensation?) running now

    def timeout_for(self, job_type: JobType[Any]) -> float:
        return job_type.timeout_s or self.job_timeout_s

    @property
    def lease_s(self) -> float:
        """How long a claim holds without renewal; the worker renews it 3 times per lease."""
        return self.worker_lost_timeout_s / 2


_context: WorkerContext | None = None


def bind(context: WorkerContext | None) -> None:
    """Install the context `run_message` uses in this process (done once by the worker)."""
    global _context
    _context = context


def run_message(job_id: str) -> None:
    """Entry point named by every message."""
    if _context is None:
        raise RuntimeError("tasksvc.runner.bind() was not called in this worker process")
    process(_context, uuid.UUID(job_id))


def process(ctx: WorkerContext, job_id: uuid.UUID) -> None:
    """Claim what the row says is waiting (an attempt, or a compensation) and run it."""
    with db.write(ctx.engine) as conn:
        record = store.claim(conn, job_id, now=utcnow(), lease_s=ctx.lease_s)
        if record is None:
            record = store.claim_compensation(conn, job_id, now=utcnow(), lease_s=ctx.lease_s)
    if record is None:
        log.debug("message for %s is a no-op: the job is not waiting", job_id)
    elif record.status is JobStatus.RUNNING:
        ctx.bound.claimed()
        run_attempt(ctx, record)
    else:
        run_compensation(ctx, record)


# --- attempts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    label: str  # success | failure | timeout (the `outcome` label of tasksvc_job_attempts_total)
    result: Any = None
    error_type: str = ""
    message: str = ""
    permanent: bool = False


def _attempt(ctx: WorkerContext, job_type: JobType[Any], record: store.JobRecord) -> Outcome:
    timeout_s = ctx.timeout_for(job_type)
    try:
        payload = job_type.parse(record.payload)
        run_ctx = RunContext(job_id=record.id, attempt=record.attempts, blocklist=SqlBlockList(ctx.engine))
        with _deadline(timeout_s), _current(ctx, record.id, record.attempts, compensation=False):
            return Outcome("success", result=job_type.run(payload, run_ctx))
    except AttemptTimeout:
        return Outcome("timeout", error_type="Timeout", message=f"attempt exceeded {timeout_s:g} s")
    except ValidationError as exc:
        return Outcome("failure", error_type="PermanentError", message=f"invalid payload: {exc}", permanent=True)
    except Exception as exc:
        return Outcome(
            "failure",
            error_type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            permanent=isinstance(exc, PermanentError),
        )


def run_attempt(ctx: WorkerContext, record: store.JobRecord) -> None:
    job_type = ctx.registry.get(record.type)
    if job_type is None:  # a worker deployed without this type: retrying cannot help
        ctx.metrics.job_attempts.labels(record.type, "failure").inc()
        message = f"this worker has no job type {record.type!r}"
        fail_attempt(ctx, record, "UnknownJobType", message, permanent=True)
        return
    started = time.perf_counter()
    outcome = _attempt(ctx, job_type, record)
    ctx.metrics.job_duration.labels(record.type).observe(time.perf_counter() - started)
    ctx.metrics.job_attempts.labels(record.type, outcome.label).inc()
    if outcome.label == "success":
        _succeed(ctx, record, outcome.result)
    else:
        fail_attempt(ctx, record, outcome.error_type, outcome.message, permanent=outcome.permanent)


def _succeed(ctx: WorkerContext, record: store.JobRecord, result: Any) -> None:
    now = utcnow()
    with db.write(ctx.engine) as conn:
        done = store.succeed(conn, record.id, attempt=record.attempts, result=result, now=now)
    if done:
        _finished(ctx, record, JobStatus.SUCCEEDED, now)
        log.info("attempt succeeded", extra=_fields(record, "success"))


def fail_attempt(
    ctx: WorkerContext,
    record: store.JobRecord,
    error_type: str,
    message: str,
    *,
    permanent: bool = False,
    lost_by: datetime | None = None,
) -> bool:
    """Record failed attempt `record.attempts`; then retry it later or start compensating.

    Used by the runner, and by the reconciler for a worker lost mid-attempt (`lost_by`: the
    lease must have run out by then). False if this caller no longer owns the attempt.
    """
    now = utcnow()
    attempt = record.attempts
    again = retry.should_retry(attempt, record.max_attempts, permanent)
    wait_s = retry.wait(attempt, ctx.policy, ctx.rng) if again else None
    error = {
        "attempt": attempt,
        "type": error_type,
        "message": message[:_MESSAGE_LIMIT],
        "at": rfc3339(now),
        "retryInSeconds": round(wait_s, 3) if wait_s is not None else None,
    }
    errors = [*record.errors, error]
    if wait_s is not None:
        return _schedule_retry(ctx, record, errors, now + timedelta(seconds=wait_s), now, lost_by)
    return _start_compensation(ctx, record, errors, now, lost_by)


def _schedule_retry(
    ctx: WorkerContext,
    record: store.JobRecord,
    errors: list[dict[str, Any]],
    due: datetime,
    now: datetime,
    lost_by: datetime | None,
) -> bool:
    attempt = record.attempts
    with db.write(ctx.engine) as conn:
        moved = store.schedule_retry(
            conn, record.id, attempt=attempt, errors=errors, next_attempt_at=due, now=now, lost_by=lost_by
        )
    if moved:
        ctx.bound.requeued()
        ctx.mq.schedule(str(record.id), attempt + 1, due.timestamp())
        ctx.metrics.job_retries.labels(record.type).inc()
        log.info("attempt failed, retrying", extra=_fields(record, "failure", error=errors[-1]))
    return moved


def _start_compensation(
    ctx: WorkerContext, record: store.JobRecord, errors: list[dict[str, Any]], now: datetime, lost_by: datetime | None
) -> bool:
    job_type = ctx.registry.get(record.type)
    # An unknown type may have something to undo: leave it to a worker that knows (or fail it there).
    compensates = job_type is None or job_type.compensate is not None
    pending = CompensationStatus.PENDING if compensates else CompensationStatus.SKIPPED
    with db.write(ctx.engine) as conn:
        moved = store.start_compensation(
            conn, record.id, attempt=record.attempts, errors=errors, compensation=pending, now=now, lost_by=lost_by
        )
        if moved and pending is CompensationStatus.SKIPPED:
            store.finish_failed(conn, record.id, compensation=pending, error=None, now=now)
    if not moved:
        return False
    log.info("attempt failed, no attempts left", extra=_fields(record, "failure", error=errors[-1]))
    if pending is CompensationStatus.SKIPPED:
        ctx.metrics.compensations.labels(record.type, "skipped").inc()
        _finished(ctx, record, JobStatus.FAILED, now)
    else:
        ctx.mq.send(str(record.id), 1, compensation=True)
    return True


# --- compensation -----------------------------------------------------------------------------


def run_compensation(ctx: WorkerContext, record: store.JobRecord) -> None:
    job_type = ctx.registry.get(record.type)
    if job_type is None or job_type.compensate is None:  # deployed without it since: nothing to run
        _end_compensation(ctx, record, CompensationStatus.FAILED, f"this worker cannot compensate {record.type!r}")
        return
    try:
        payload = job_type.parse(record.payload)
        comp_ctx = CompensationContext(
            job_id=record.id, attempts=record.attempts, errors=record.errors, blocklist=SqlBlockList(ctx.engine)
        )
        with (
            _deadline(ctx.timeout_for(job_type)),
            _current(ctx, record.id, record.compensation_attempts, compensation=True),
        ):
            job_type.compensate(payload, comp_ctx)
    except (Exception, AttemptTimeout) as exc:
        _compensation_failed(ctx, record, f"{type(exc).__name__}: {exc}")
        return
    _end_compensation(ctx, record, CompensationStatus.SUCCEEDED, None)


def compensation_lost(ctx: WorkerContext, record: store.JobRecord, lost_by: datetime) -> bool:
    """The worker running a compensation attempt was lost: a failed compensation attempt."""
    message = "WorkerLost: the worker running this compensation stopped answering"
    return _compensation_failed(ctx, record, message, lost_by)


def _compensation_failed(
    ctx: WorkerContext, record: store.JobRecord, message: str, lost_by: datetime | None = None
) -> bool:
    """A compensation attempt failed: retry it under the job's policy, or give up (still `failed`)."""
    now = utcnow()
    attempt = record.compensation_attempts
    message = message[:_MESSAGE_LIMIT]
    if retry.should_retry(attempt, record.max_attempts):
        due = now + timedelta(seconds=retry.wait(attempt, ctx.policy, ctx.rng))
        with db.write(ctx.engine) as conn:
            moved = store.retry_compensation(
                conn, record.id, attempt=attempt, error=message, next_attempt_at=due, now=now, lost_by=lost_by
            )
        if moved:
            ctx.mq.schedule(str(record.id), attempt + 1, due.timestamp(), compensation=True)
        return moved
    return _end_compensation(ctx, record, CompensationStatus.FAILED, message, lost_by)


def _end_compensation(
    ctx: WorkerContext,
    record: store.JobRecord,
    outcome: CompensationStatus,
    error: str | None,
    lost_by: datetime | None = None,
) -> bool:
    """compensating -> failed, with how the compensation ended (if this worker still owns it)."""
    now = utcnow()
    with db.write(ctx.engine) as conn:
        done = store.finish_failed(
            conn,
            record.id,
            compensation=outcome,
            error=error,
            now=now,
            compensation_attempt=record.compensation_attempts,
            lost_by=lost_by,
        )
    if done:
        ctx.metrics.compensations.labels(record.type, outcome.value).inc()
        _finished(ctx, record, JobStatus.FAILED, now)
    return done


# --- shared -----------------------------------------------------------------------------------


def _finished(ctx: WorkerContext, record: store.JobRecord, status: JobStatus, now: datetime) -> None:
    ctx.metrics.jobs_finished.labels(record.type, status.value).inc()
    ctx.metrics.job_latency.labels(record.type).observe((now - record.created_at).total_seconds())
    try:
        ctx.mq.publish_done(str(record.id), status.value)
    except Exception:  # a missed wake-up only delays a long-poll until its own timeout
        log.warning("could not publish completion of %s", record.id, exc_info=True)


def _fields(record: store.JobRecord, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": str(record.id), "job_type": record.type, "attempt": record.attempts, "outcome": outcome, **extra}


@contextmanager
def _current(ctx: WorkerContext, job_id: uuid.UUID, attempt: int, *, compensation: bool) -> Iterator[None]:
    ctx.current = (job_id, attempt, compensation)
    try:
        yield
    finally:
        ctx.current = None


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise AttemptTimeout in this (main) thread after `seconds`; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(_signum: int, _frame: FrameType | None) -> None:
        raise AttemptTimeout

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
