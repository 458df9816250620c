"""The reconciler: the database says what should be happening; make Redis and the rows agree.

It runs in every `tasksvc worker` supervisor, every RECONCILE_INTERVAL seconds:
- an attempt (or compensation) whose lease expired lost its worker: it is recorded as a
  failed attempt `WorkerLost` and retried or compensated like any failure;
- a waiting job (queued, a due retry, a waiting compensation) whose message is neither
  on the queue nor in the due set (Redis restarted empty, or a submit died between its
  commit and its send) gets its message again;
- expired idempotency keys are deleted.
Every step is a conditional UPDATE or an idempotent send, so several reconcilers (one
per worker replica) may run at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from tasksvc import db, store
from tasksvc.clock import utcnow
from tasksvc.models import CompensationStatus, JobStatus
from tasksvc.runner import WorkerContext, compensation_lost, fail_attempt

log = logging.getLogger("tasksvc.reconciler")
BATCH = 500


def reconcile(ctx: WorkerContext, *, grace_s: float) -> dict[str, int]:
    """One pass; returns what it did (for logs and tests)."""
    now = utcnow()
    done = {"lost": 0, "resent": 0, "keys_pruned": 0}
    with db.read(ctx.engine) as conn:
        lost = store.expired_leases(conn, now=now, limit=BATCH)
    for record in lost:
        if record.status is JobStatus.RUNNING:
            ctx.metrics.job_attempts.labels(record.type, "worker_lost").inc()
            fail_attempt(ctx, record, "WorkerLost", "the worker running this attempt stopped answering")
        else:
            compensation_lost(ctx, record)
        done["lost"] += 1
    with db.read(ctx.engine) as conn:
        waiting = store.waiting_jobs(conn, older_than=now - timedelta(seconds=grace_s), limit=BATCH)
    for record in waiting:
        if _resend(ctx, record):
            done["resent"] += 1
    with db.write(ctx.engine) as conn:
        done["keys_pruned"] = store.delete_expired_keys(conn, now)
    with db.read(ctx.engine) as conn:
        ctx.bound.reset(store.count_waiting(conn))
    if done["lost"] or done["resent"]:
        log.warning("reconciled", extra=done)
    return done


def _resend(ctx: WorkerContext, record: store.JobRecord) -> bool:
    job_id = str(record.id)
    compensation = record.status is JobStatus.COMPENSATING
    attempt = record.compensation_attempts + 1 if compensation else record.attempts + 1
    if compensation and record.compensation_status not in (CompensationStatus.PENDING, CompensationStatus.RETRYING):
        return False
    if ctx.mq.is_scheduled(job_id, attempt, compensation) or ctx.mq.has_live_message(job_id, attempt, compensation):
        return False
    ctx.mq.send(job_id, attempt, compensation)
    return True
