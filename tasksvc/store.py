"""Every SQL statement about jobs. Functions take a Connection and never commit.

Status changes are conditional UPDATEs built from `models.TRANSITIONS`: each one names
the statuses it may come from (and, for a worker, the attempt it owns), so a stale
worker, a duplicate message or a racing cancel simply matches no row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, or_, select, true, update
from sqlalchemy.sql.elements import ColumnElement

from tasksvc.models import (
    COMPENSATION_WAITING,
    CompensationStatus,
    IdempotencyKey,
    Job,
    JobStatus,
    allowed_sources,
)

T = Job.__table__.c
K = IdempotencyKey.__table__.c


@dataclass(frozen=True)
class JobRecord:
    """A job row as read from the database."""

    id: uuid.UUID
    scope: str
    type: str
    status: JobStatus
    payload: dict[str, Any]
    idempotency_key: str | None
    attempts: int
    max_attempts: int
    result: Any
    errors: list[dict[str, Any]]
    compensation_status: CompensationStatus | None
    compensation_attempts: int
    compensation_error: str | None
    compensation_finished_at: datetime | None
    undo: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    lease_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> JobRecord:
        data = dict(row._mapping)
        data["status"] = JobStatus(data["status"])
        if data["compensation_status"] is not None:
            data["compensation_status"] = CompensationStatus(data["compensation_status"])
        data["errors"] = list(data["errors"] or [])
        return cls(**data)


def _one(conn: Connection, stmt: Any) -> JobRecord | None:
    row = conn.execute(stmt).first()
    return JobRecord.from_row(row) if row is not None else None


def _moving(job_id: uuid.UUID, target: JobStatus) -> ColumnElement[bool]:
    return and_(T.id == job_id, T.status.in_([s.value for s in allowed_sources(target)]))


# --- submit ---------------------------------------------------------------------------------


def insert_job(
    conn: Connection,
    *,
    job_id: uuid.UUID,
    scope: str,
    job_type: str,
    payload: dict[str, Any],
    max_attempts: int,
    idempotency_key: str | None,
    now: datetime,
) -> JobRecord:
    values = {
        "id": job_id,
        "scope": scope,
        "type": job_type,
        "status": JobStatus.QUEUED.value,
        "payload": payload,
        "idempotency_key": idempotency_key,
        "attempts": 0,
        "max_attempts": max_attempts,
        "errors": [],
        "compensation_attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    row = conn.execute(insert(Job).values(**values).returning(*Job.__table__.c)).one()
    return JobRecord.from_row(row)


def delete_unstarted(conn: Connection, job_id: uuid.UUID) -> bool:
    """Remove a job (and its idempotency key) whose message could not be sent, if no worker has
    claimed it meanwhile. False: the job exists and has started, so it was recorded after all."""
    result = conn.execute(delete(Job).where(T.id == job_id, T.status == JobStatus.QUEUED.value, T.attempts == 0))
    if result.rowcount != 1:
        return False
    conn.execute(delete(IdempotencyKey).where(K.job_id == job_id))
    return True


# --- idempotency keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyClaim:
    fingerprint: str
    job_id: uuid.UUID
    expires_at: datetime


def find_key(conn: Connection, scope: str, key: str) -> KeyClaim | None:
    row = conn.execute(select(K.fingerprint, K.job_id, K.expires_at).where(K.scope == scope, K.key == key)).first()
    return KeyClaim(row.fingerprint, row.job_id, row.expires_at) if row is not None else None


def insert_key(
    conn: Connection, *, scope: str, key: str, fingerprint: str, job_id: uuid.UUID, expires_at: datetime
) -> None:
    """Claim `key` (raises IntegrityError if the scope already holds it: the DB enforces it)."""
    conn.execute(
        insert(IdempotencyKey).values(
            scope=scope, key=key, fingerprint=fingerprint, job_id=job_id, expires_at=expires_at
        )
    )


def delete_expired_keys(conn: Connection, now: datetime, scope: str | None = None, key: str | None = None) -> int:
    """Forget expired keys (all of them, or the one named): they may then create a new job."""
    stmt = delete(IdempotencyKey).where(K.expires_at <= now)
    if scope is not None and key is not None:
        stmt = stmt.where(K.scope == scope, K.key == key)
    return conn.execute(stmt).rowcount


# --- reads ------------------------------------------------------------------------------------


def get_job(conn: Connection, job_id: uuid.UUID, scope: str | None = None) -> JobRecord | None:
    stmt = select(Job.__table__).where(T.id == job_id)
    if scope is not None:
        stmt = stmt.where(T.scope == scope)
    return _one(conn, stmt)


def list_jobs(
    conn: Connection,
    *,
    scope: str,
    limit: int,
    before: uuid.UUID | None = None,
    status: JobStatus | None = None,
    job_type: str | None = None,
) -> list[JobRecord]:
    """Newest first by id (UUIDv7, so time order), keyset-paginated: `before` is the last id seen."""
    stmt = select(Job.__table__).where(T.scope == scope)
    if status is not None:
        stmt = stmt.where(T.status == status.value)
    if job_type is not None:
        stmt = stmt.where(T.type == job_type)
    if before is not None:
        stmt = stmt.where(T.id < before)
    stmt = stmt.order_by(T.id.desc()).limit(limit)
    return [JobRecord.from_row(r) for r in conn.execute(stmt)]


def count_waiting(conn: Connection) -> int:
    """Jobs waiting to run (queued, or retrying), across all scopes."""
    stmt = (
        select(func.count())
        .select_from(Job.__table__)
        .where(T.status.in_([JobStatus.QUEUED.value, JobStatus.RETRYING.value]))
    )
    return int(conn.execute(stmt).scalar_one())


# --- the worker's side ------------------------------------------------------------------------


def claim(conn: Connection, job_id: uuid.UUID, *, now: datetime, lease_s: float) -> JobRecord | None:
    """queued/retrying (and due) -> running, counting the attempt. None: not ours to run."""
    due = or_(T.status == JobStatus.QUEUED.value, T.next_attempt_at <= now)
    stmt = (
        update(Job)
        .where(_moving(job_id, JobStatus.RUNNING), due)
        .values(
            status=JobStatus.RUNNING.value,
            attempts=T.attempts + 1,
            started_at=now,
            updated_at=now,
            next_attempt_at=None,
            lease_expires_at=now + timedelta(seconds=lease_s),
        )
        .returning(*Job.__table__.c)
    )
    return _one(conn, stmt)


def _owned(job_id: uuid.UUID, target: JobStatus, attempt: int, lost_by: datetime | None = None) -> ColumnElement[bool]:
    """The row may move to `target` and this worker owns attempt `attempt` of it. With `lost_by`
    (the reconciler), the attempt's lease must also have run out by then: a heartbeat that came
    in meanwhile means its worker is alive after all."""
    owned = and_(_moving(job_id, target), T.attempts == attempt)
    return and_(owned, T.lease_expires_at < lost_by) if lost_by is not None else owned


def succeed(conn: Connection, job_id: uuid.UUID, *, attempt: int, result: Any, now: datetime) -> bool:
    stmt = (
        update(Job)
        .where(_owned(job_id, JobStatus.SUCCEEDED, attempt))
        .values(
            status=JobStatus.SUCCEEDED.value,
            result=result,
            updated_at=now,
            finished_at=now,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def schedule_retry(
    conn: Connection,
    job_id: uuid.UUID,
    *,
    attempt: int,
    errors: Sequence[dict[str, Any]],
    next_attempt_at: datetime,
    now: datetime,
    lost_by: datetime | None = None,
) -> bool:
    stmt = (
        update(Job)
        .where(_owned(job_id, JobStatus.RETRYING, attempt, lost_by))
        .values(
            status=JobStatus.RETRYING.value,
            errors=list(errors),
            next_attempt_at=next_attempt_at,
            updated_at=now,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def start_compensation(
    conn: Connection,
    job_id: uuid.UUID,
    *,
    attempt: int,
    errors: Sequence[dict[str, Any]],
    compensation: CompensationStatus,
    now: datetime,
    lost_by: datetime | None = None,
) -> bool:
    """running -> compensating after the final failed attempt.

    `compensation` is PENDING (a compensate handler will run) or SKIPPED (nothing to undo).
    """
    stmt = (
        update(Job)
        .where(_owned(job_id, JobStatus.COMPENSATING, attempt, lost_by))
        .values(
            status=JobStatus.COMPENSATING.value,
            errors=list(errors),
            compensation_status=compensation.value,
            updated_at=now,
            next_attempt_at=None,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def claim_compensation(conn: Connection, job_id: uuid.UUID, *, now: datetime, lease_s: float) -> JobRecord | None:
    """A waiting (pending, or due retrying) compensation -> running, counting its attempt."""
    waiting = T.compensation_status.in_([s.value for s in COMPENSATION_WAITING])
    due = or_(T.next_attempt_at.is_(None), T.next_attempt_at <= now)
    stmt = (
        update(Job)
        .where(T.id == job_id, T.status == JobStatus.COMPENSATING.value, waiting, due)
        .values(
            compensation_status=CompensationStatus.RUNNING.value,
            compensation_attempts=T.compensation_attempts + 1,
            updated_at=now,
            next_attempt_at=None,
            lease_expires_at=now + timedelta(seconds=lease_s),
        )
        .returning(*Job.__table__.c)
    )
    return _one(conn, stmt)


def _owned_compensation(job_id: uuid.UUID, attempt: int, lost_by: datetime | None) -> ColumnElement[bool]:
    owned = and_(
        T.id == job_id,
        T.status == JobStatus.COMPENSATING.value,
        T.compensation_status == CompensationStatus.RUNNING.value,
        T.compensation_attempts == attempt,
    )
    return and_(owned, T.lease_expires_at < lost_by) if lost_by is not None else owned


def retry_compensation(
    conn: Connection,
    job_id: uuid.UUID,
    *,
    attempt: int,
    error: str,
    next_attempt_at: datetime,
    now: datetime,
    lost_by: datetime | None = None,
) -> bool:
    stmt = (
        update(Job)
        .where(_owned_compensation(job_id, attempt, lost_by))
        .values(
            compensation_status=CompensationStatus.RETRYING.value,
            compensation_error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def finish_failed(
    conn: Connection,
    job_id: uuid.UUID,
    *,
    compensation: CompensationStatus,
    error: str | None,
    now: datetime,
    compensation_attempt: int | None = None,
    lost_by: datetime | None = None,
) -> bool:
    """compensating -> failed, recording how the compensation ended."""
    where = _moving(job_id, JobStatus.FAILED)
    if compensation_attempt is not None:
        where = _owned_compensation(job_id, compensation_attempt, lost_by)
    stmt = (
        update(Job)
        .where(where)
        .values(
            status=JobStatus.FAILED.value,
            compensation_status=compensation.value,
            compensation_error=error,
            compensation_finished_at=now,
            finished_at=now,
            updated_at=now,
            next_attempt_at=None,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def cancel(conn: Connection, job_id: uuid.UUID, *, scope: str, now: datetime) -> bool:
    stmt = (
        update(Job)
        .where(_moving(job_id, JobStatus.CANCELLED), T.scope == scope)
        .values(
            status=JobStatus.CANCELLED.value,
            finished_at=now,
            updated_at=now,
            next_attempt_at=None,
        )
    )
    return conn.execute(stmt).rowcount == 1


def record_undo(conn: Connection, job_id: uuid.UUID, undo: dict[str, Any]) -> None:
    """Keep what a job found before its first write; later attempts never overwrite it."""
    conn.execute(update(Job).where(T.id == job_id, T.undo.is_(None)).values(undo=undo))


def get_undo(conn: Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    value = conn.execute(select(T.undo).where(T.id == job_id)).scalar_one_or_none()
    return dict(value) if value else None


# --- sweeps (the reconciler) ------------------------------------------------------------------


def waiting_jobs(
    conn: Connection, *, older_than: datetime, limit: int, after: uuid.UUID | None = None
) -> list[JobRecord]:
    """Queued jobs, due retries and waiting compensations last touched before `older_than`."""
    waiting_comp = and_(
        T.status == JobStatus.COMPENSATING.value,
        T.compensation_status.in_([s.value for s in COMPENSATION_WAITING]),
    )
    stmt = (
        select(Job.__table__)
        .where(
            or_(
                and_(T.status == JobStatus.QUEUED.value, T.updated_at <= older_than),
                and_(T.status == JobStatus.RETRYING.value, T.next_attempt_at <= older_than),
                and_(waiting_comp, or_(T.next_attempt_at.is_(None), T.next_attempt_at <= older_than)),
            ),
            T.id > after if after is not None else true(),
        )
        .order_by(T.id)
        .limit(limit)
    )
    return [JobRecord.from_row(r) for r in conn.execute(stmt)]


def expired_leases(conn: Connection, *, now: datetime, limit: int) -> list[JobRecord]:
    """Attempts (or compensations) whose worker stopped renewing its lease."""
    stmt = (
        select(Job.__table__)
        .where(
            T.status.in_([JobStatus.RUNNING.value, JobStatus.COMPENSATING.value]),
            T.lease_expires_at.is_not(None),
            T.lease_expires_at < now,
        )
        .order_by(T.id)
        .limit(limit)
    )
    return [JobRecord.from_row(r) for r in conn.execute(stmt)]


def renew_lease(conn: Connection, job_id: uuid.UUID, *, attempt: int, compensation: bool, until: datetime) -> bool:
    """Extend the lease of the attempt (or compensation attempt) this worker runs, and only that one."""
    if compensation:
        owner = _owned_compensation(job_id, attempt, lost_by=None)
    else:
        owner = and_(T.status == JobStatus.RUNNING.value, T.attempts == attempt)
    stmt = update(Job).where(T.id == job_id, owner, T.lease_expires_at.is_not(None)).values(lease_expires_at=until)
    return conn.execute(stmt).rowcount == 1
