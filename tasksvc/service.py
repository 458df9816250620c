"""submit / get / list / cancel: transactions, and the message sent after the commit.

The row is committed before its message is sent, so a worker never receives an id it
cannot find. If the message cannot be sent, the row is deleted again and the caller
gets BackendUnavailable (503): nothing half-recorded. If even that delete fails, the
row stays `queued` and the reconciler in the workers sends its message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from uuid6 import uuid7

from tasksvc import blocklist, db, store
from tasksvc.admission import KeyLocks, QueueBound
from tasksvc.clock import utcnow
from tasksvc.config import Settings
from tasksvc.errors import (
    BackendUnavailable,
    BlockedIpNotFound,
    Conflict,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    InvalidCursor,
    JobNotFound,
    PayloadInvalid,
    QueueFull,
    UnknownJobType,
)
from tasksvc.jobtypes import Registry
from tasksvc.jobtypes.base import BlockedEntry
from tasksvc.jobtypes.block_ip import normalise_ip
from tasksvc.metrics import Metrics
from tasksvc.models import JobStatus
from tasksvc.queue import MessageQueue

log = logging.getLogger("tasksvc.service")
_RETRY_AFTER_S = 1
T = TypeVar("T")


@dataclass(frozen=True)
class Submission:
    job_type: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class Submitted:
    job: store.JobRecord
    replayed: bool


@dataclass(frozen=True)
class Page:
    items: list[store.JobRecord]
    next_cursor: str | None


def fingerprint(job_type: str, payload: dict[str, Any], max_attempts: int) -> str:
    """Canonical digest of what makes two requests "the same": key order does not matter."""
    doc = {"type": job_type, "payload": payload, "maxAttempts": max_attempts}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


class JobService:
    def __init__(
        self, settings: Settings, engine: Engine, mq: MessageQueue, registry: Registry, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.mq = mq
        self.registry = registry
        self.metrics = metrics
        self.bound = QueueBound(mq.redis, settings.queue_max_size)
        self.key_locks = KeyLocks(mq.redis)

    # --- submit -------------------------------------------------------------------------------

    def validate(self, sub: Submission) -> tuple[dict[str, Any], int, str]:
        """The payload as stored (normalised), the attempts to allow, and the request's fingerprint
        (over the payload with its defaults filled in: sending a default or leaving it out is the
        same request). Raises on bad input."""
        job_type = self.registry.get(sub.job_type)
        if job_type is None:
            raise UnknownJobType(f"unknown job type {sub.job_type!r}; see GET /v1/job-types", job_type=sub.job_type)
        try:
            model = job_type.parse(sub.payload)
        except ValidationError as exc:
            errors = [
                {"loc": ["payload", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            raise PayloadInvalid(errors=errors) from None
        max_attempts = self.settings.retry_max_attempts if sub.max_attempts is None else sub.max_attempts
        limit = self.settings.retry_max_attempts_limit
        if not 1 <= max_attempts <= limit:
            msg = f"must be between 1 and RETRY_MAX_ATTEMPTS_LIMIT ({limit})"
            raise PayloadInvalid(errors=[{"loc": ["maxAttempts"], "msg": msg, "type": "range"}])
        canonical = model.model_dump(mode="json", by_alias=True)
        stored = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return stored, max_attempts, fingerprint(sub.job_type, canonical, max_attempts)

    def submit(self, sub: Submission, scope: str = "") -> Submitted:
        """Record a job and send its message, or replay the job its idempotency key names."""
        payload, max_attempts, fp = self.validate(sub)
        if not sub.idempotency_key:
            return self._create(sub, scope, payload, max_attempts, "")
        token = self._guarded(lambda: self.key_locks.acquire(scope, sub.idempotency_key or ""))
        if token is None:
            raise IdempotencyKeyInUse()
        try:
            replay = self._replay(scope, sub.idempotency_key, fp)
            return replay if replay is not None else self._create(sub, scope, payload, max_attempts, fp)
        finally:
            with contextlib.suppress(RedisError):
                self.key_locks.release(scope, sub.idempotency_key, token)

    def _create(self, sub: Submission, scope: str, payload: dict[str, Any], max_attempts: int, fp: str) -> Submitted:
        self._admit()
        try:
            job = self._insert(sub, scope, payload, max_attempts, fp)
        except BaseException:
            self._give_back_slot()
            raise
        if isinstance(job, Submitted):  # the key was taken meanwhile (its lock had expired)
            self._give_back_slot()
            return job
        self._send_first(job)
        self.metrics.jobs_submitted.labels(sub.job_type).inc()
        return Submitted(job, replayed=False)

    def _insert(
        self, sub: Submission, scope: str, payload: dict[str, Any], max_attempts: int, fp: str
    ) -> store.JobRecord | Submitted:
        now = utcnow()
        job_id = uuid7()
        try:
            with db.write(self.engine) as conn:
                job = store.insert_job(
                    conn,
                    job_id=job_id,
                    scope=scope,
                    job_type=sub.job_type,
                    payload=payload,
                    max_attempts=max_attempts,
                    idempotency_key=sub.idempotency_key,
                    now=now,
                )
                if sub.idempotency_key:
                    store.delete_expired_keys(conn, now, scope, sub.idempotency_key)
                    store.insert_key(
                        conn,
                        scope=scope,
                        key=sub.idempotency_key,
                        fingerprint=fp,
                        job_id=job_id,
                        expires_at=now + timedelta(seconds=self.settings.idempotency_ttl),
                    )
            return job
        except IntegrityError:
            assert sub.idempotency_key is not None  # the only unique constraint a new id can hit
            replay = self._replay(scope, sub.idempotency_key, fp)
            if replay is None:
                raise IdempotencyKeyInUse() from None
            return replay
        except SQLAlchemyError as exc:
            self._unavailable("database", exc)

    def _replay(self, scope: str, key: str, fp: str) -> Submitted | None:
        try:
            with db.read(self.engine) as conn:
                claim = store.find_key(conn, scope, key)
                if claim is None or claim.expires_at <= utcnow():
                    return None
                if claim.fingerprint != fp:
                    raise IdempotencyKeyMismatch()
                job = store.get_job(conn, claim.job_id)
        except SQLAlchemyError as exc:
            self._unavailable("database", exc)
        if job is None:
            raise IdempotencyKeyInUse()
        self.metrics.jobs_deduplicated.labels(job.type).inc()
        return Submitted(job, replayed=True)

    def _admit(self) -> None:
        """Take a slot in the bounded queue, or refuse new work at QUEUE_MAX_SIZE (SPEC section 7)."""
        if self._guarded(self.bound.try_admit):
            return
        self.metrics.jobs_rejected.labels("queue_full").inc()
        raise QueueFull(retry_after_s=self._guarded(self.bound.retry_after_s))

    def _give_back_slot(self) -> None:
        """A slot taken for a job that was not recorded, or that no longer waits (cancelled).
        If Redis is down now, the reconciler's next count puts it right."""
        with contextlib.suppress(RedisError):
            self.bound.release()

    def _guarded(self, call: Callable[[], T]) -> T:
        """Run a Redis call; Redis unreachable is a 503 with nothing recorded."""
        try:
            return call()
        except RedisError as exc:
            self._unavailable("redis", exc)

    def _send_first(self, job: store.JobRecord) -> None:
        """Send the job's first message. If that fails, undo the row and answer 503, unless a worker
        got the message after all (the send failed only in its reply): then the job is recorded."""
        try:
            self.mq.send(str(job.id), 1)
        except Exception as exc:
            try:
                with db.write(self.engine) as conn:
                    deleted = store.delete_unstarted(conn, job.id)
            except SQLAlchemyError:  # the row stays `queued`: the reconciler sends its message
                log.warning("job %s kept for the reconciler: its message and its delete failed", job.id)
                self._unavailable("redis", exc)
            if not deleted:
                log.warning("job %s: its send reported %s, but a worker has it", job.id, type(exc).__name__)
                return
            self._give_back_slot()
            self._unavailable("redis", exc)

    def _unavailable(self, backend: str, exc: Exception) -> NoReturn:
        self.metrics.jobs_rejected.labels("backend_unavailable").inc()
        log.warning("%s unavailable: %s", backend, type(exc).__name__)
        raise BackendUnavailable(f"the {backend} is unavailable; nothing was recorded", retry_after_s=_RETRY_AFTER_S)

    # --- read ---------------------------------------------------------------------------------

    def get(self, job_id: uuid.UUID, scope: str = "") -> store.JobRecord:
        with db.read(self.engine) as conn:
            job = store.get_job(conn, job_id, scope)
        if job is None:
            raise JobNotFound()
        return job

    def page(
        self, *, scope: str = "", limit: int, cursor: str | None, status: JobStatus | None, job_type: str | None
    ) -> Page:
        before = _decode_id_cursor(cursor) if cursor else None
        with db.read(self.engine) as conn:
            items = store.list_jobs(conn, scope=scope, limit=limit + 1, before=before, status=status, job_type=job_type)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, _encode(items[-1].id.hex) if more else None)

    def cancel(self, job_id: uuid.UUID, scope: str = "") -> store.JobRecord:
        with db.write(self.engine) as conn:
            cancelled = store.cancel(conn, job_id, scope=scope, now=utcnow())
            job = store.get_job(conn, job_id, scope)
        if job is None:
            raise JobNotFound()
        if not cancelled:
            raise Conflict(f"a {job.status.value} job cannot be cancelled")
        self.metrics.jobs_finished.labels(job.type, JobStatus.CANCELLED.value).inc()
        self._give_back_slot()
        try:
            self.mq.publish_done(str(job.id), JobStatus.CANCELLED.value)
        except RedisError:
            log.warning("could not publish the cancellation of %s", job.id)
        return job

    # --- blocked IPs --------------------------------------------------------------------------

    def blocked_ip(self, ip: str) -> BlockedEntry:
        with db.read(self.engine) as conn:
            entry = blocklist.get(conn, ip)
        if entry is None:
            raise BlockedIpNotFound()
        return entry

    def blocked_ips(self, *, limit: int, cursor: str | None) -> tuple[list[BlockedEntry], str | None]:
        after = _decode_blocked_cursor(cursor) if cursor else None
        with db.read(self.engine) as conn:
            items = blocklist.page(conn, limit=limit + 1, after=after)
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if items else None
        nxt = _encode(f"{last.created_at.isoformat()}|{last.ip}") if more and last else None
        return items, nxt

    def ready(self) -> dict[str, bool]:
        """Readiness: does each backend answer?"""
        checks = {"database": False, "redis": False}
        try:
            with db.read(self.engine) as conn:
                conn.exec_driver_sql("SELECT 1")
            checks["database"] = True
        except (SQLAlchemyError, OperationalError):
            pass
        with contextlib.suppress(RedisError):
            checks["redis"] = bool(self.mq.redis.ping())
        return checks


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor() from None


def _decode_id_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=_decode(cursor))
    except ValueError:
        raise InvalidCursor() from None


def _decode_blocked_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, ip) of the last row of a page, exactly as `blocked_ips` encoded it."""
    at_text, sep, ip = _decode(cursor).partition("|")
    try:
        at = datetime.fromisoformat(at_text)
        if not sep or at.utcoffset() != timedelta(0) or normalise_ip(ip) != ip:
            raise ValueError("not a cursor of ours")
    except ValueError:
        raise InvalidCursor() from None
    return at, ip
