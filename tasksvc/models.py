"""Tables (SQLAlchemy 2), the JobStatus enum and the transitions a job may make.

The transitions table is the one place the state machine is written down; `store`
turns it into conditional UPDATEs (`WHERE status IN (...)`), so a stale worker or a
duplicate message can never move a job backwards or out of a terminal state.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, TypeDecorator, Uuid, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
WAITING = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})

#: target status -> the statuses a job may come from.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: WAITING,
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.RETRYING: frozenset({JobStatus.RUNNING}),
    JobStatus.COMPENSATING: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.COMPENSATING}),
    JobStatus.CANCELLED: WAITING,
}


class CompensationStatus(enum.StrEnum):
    PENDING = "pending"  # decided, not started yet (shown to clients as "running")
    RUNNING = "running"
    RETRYING = "retrying"  # waiting for its next attempt (shown to clients as "running")
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


COMPENSATION_WAITING = frozenset({CompensationStatus.PENDING, CompensationStatus.RETRYING})


def allowed_sources(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which a job may move to `target`."""
    return TRANSITIONS[target]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    compensation_status: Mapped[str | None] = mapped_column(String(16))
    compensation_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    compensation_error: Mapped[str | None] = mapped_column(Text)
    compensation_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undo: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Newest-first listing and its filters walk these indexes (keyset on id, time-ordered).
        Index("ix_jobs_scope_id", "scope", "id"),
        Index("ix_jobs_scope_status_id", "scope", "status", "id"),
        Index("ix_jobs_scope_type_id", "scope", "type", "id"),
        # Workers' sweeps: due retries, expired leases, stale queued jobs.
        Index("ix_jobs_status_next_attempt", "status", "next_attempt_at"),
    )


class IdempotencyKey(Base):
    """A key's claim on a job: the primary key makes it unique per scope, in the database.

    Kept apart from `jobs` so that an expired key can be deleted (and reused) while the job
    it created keeps showing `idempotencyKey`.
    """

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)


class BlockedIp(Base):
    __tablename__ = "blocked_ips"

    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_blocked_ips_created_ip", "created_at", "ip"),)
