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
import uuid
from datetime import datetime, timedelta

from tasksvc import db, store
from tasksvc.clock import utcnow
from tasksvc.models import COMPENSATION_WAITING, JobStatus
from tasksvc.queue import message_id
from tasksvc.runner import WorkerContext, compensation_lost, fail_attempt

log = logging.getLogger("tasksvc.reconciler")
BATCH = 500


def reconcile(ctx: WorkerContext, *, grace_s: float) -> dict[str, int]:
    """One pass; returns what it did (for logs and tests)."""
    now = utcnow()
    done = {"lost": _recover_lost(ctx, now), "resent": 0, "keys_pruned": 0}
    after: uuid.UUID | None = None
    while True:  # every waiting job, a page at a time: none is left behind a long backlog
        with db.read(ctx.engine) as conn:
            page = store.waiting_jobs(conn, older_than=now - timedelta(seconds=grace_s), limit=BATCH, after=after)
        done["resent"] += _resend_missing(ctx, page)
        if len(page) < BATCH:
            break
        after = page[-1].id
    with db.write(ctx.engine) as conn:
        done["keys_pruned"] = store.delete_expired_keys(conn, now)
    with db.read(ctx.engine) as conn:
        ctx.bound.reset(store.count_waiting(conn))
    if done["lost"] or done["resent"]:
        log.warning("reconciled", extra=done)
    return done


def _recover_lost(ctx: WorkerContext, now: datetime) -> int:
    """Fail the attempts (and compensations) whose lease expired: their worker is gone."""
    with db.read(ctx.engine) as conn:
        lost = store.expired_leases(conn, now=now, limit=BATCH)
    recovered = 0
    for record in lost:
        if record.status is JobStatus.RUNNING:
            moved = fail_attempt(
                ctx, record, "WorkerLost", "the worker running this attempt stopped answering", lost_by=now
            )
            if moved:  # several reconcilers may race for it: only the one whose UPDATE matched counts it
                ctx.metrics.job_attempts.labels(record.type, "worker_lost").inc()
        else:
            moved = compensation_lost(ctx, record, lost_by=now)
        recovered += moved
    return recovered


def _message(record: store.JobRecord) -> tuple[str, int, bool] | None:
    """(job id, attempt, compensation?) of the message a waiting job needs, or None."""
    if record.status is JobStatus.COMPENSATING:
        if record.compensation_status not in COMPENSATION_WAITING:
            return None
        return str(record.id), record.compensation_attempts + 1, True
    return str(record.id), record.attempts + 1, False


def _resend_missing(ctx: WorkerContext, records: list[store.JobRecord]) -> int:
    needed = [m for m in map(_message, records) if m is not None]
    ids = [message_id(*m) for m in needed]
    present = ctx.mq.live_messages(ids) | ctx.mq.scheduled(ids)
    missing = [m for m, msg in zip(needed, ids, strict=True) if msg not in present]
    for job_id, attempt, compensation in missing:
        ctx.mq.send(job_id, attempt, compensation)
    return len(missing)
