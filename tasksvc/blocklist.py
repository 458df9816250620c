"""The `blocked_ips` table: the BlockList port that `block_ip` handlers use, and its reads.

Every write runs in its own transaction together with the job's undo record (what the
row was before the job's first write), so a worker dying between the two cannot leave a
write that compensation does not know how to undo.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update

from tasksvc import db, store
from tasksvc.clock import utcnow
from tasksvc.jobtypes.base import BlockedEntry
from tasksvc.models import BlockedIp

B = BlockedIp.__table__.c


def _entry(row: Any) -> BlockedEntry:
    return BlockedEntry(ip=row.ip, reason=row.reason, job_id=row.job_id, created_at=row.created_at)


def get(conn: Connection, ip: str) -> BlockedEntry | None:
    row = conn.execute(select(BlockedIp.__table__).where(B.ip == ip)).first()
    return _entry(row) if row is not None else None


def page(conn: Connection, *, limit: int, after: tuple[datetime, str] | None = None) -> list[BlockedEntry]:
    """Newest first by (created_at, ip); `after` is the last (created_at, ip) already seen."""
    stmt = select(BlockedIp.__table__)
    if after is not None:
        at, ip = after
        stmt = stmt.where(or_(B.created_at < at, and_(B.created_at == at, B.ip < ip)))
    stmt = stmt.order_by(B.created_at.desc(), B.ip.desc()).limit(limit)
    return [_entry(r) for r in conn.execute(stmt)]


def _snapshot(entry: BlockedEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "reason": entry.reason,
        "jobId": str(entry.job_id) if entry.job_id else None,
        "createdAt": entry.created_at.isoformat(),
    }


def _put(conn: Connection, ip: str, reason: str | None, job_id: uuid.UUID | None, at: datetime) -> None:
    if get(conn, ip) is None:
        conn.execute(insert(BlockedIp).values(ip=ip, reason=reason, job_id=job_id, created_at=at))
    else:
        conn.execute(update(BlockedIp).where(B.ip == ip).values(reason=reason, job_id=job_id))


@dataclass(frozen=True)
class SqlBlockList:
    """BlockList on the database; one transaction per call."""

    engine: Engine

    def block(self, ip: str, reason: str | None, job_id: uuid.UUID) -> bool:
        with db.write(self.engine) as conn:
            before = get(conn, ip)
            store.record_undo(conn, job_id, {"ip": ip, "before": _snapshot(before)})
            if before is not None and before.reason == reason:
                return False
            _put(conn, ip, reason, job_id, utcnow())
            return True

    def unblock(self, ip: str, job_id: uuid.UUID) -> bool:
        with db.write(self.engine) as conn:
            before = get(conn, ip)
            store.record_undo(conn, job_id, {"ip": ip, "before": _snapshot(before)})
            return conn.execute(delete(BlockedIp).where(B.ip == ip)).rowcount == 1

    def restore(self, job_id: uuid.UUID) -> bool:
        with db.write(self.engine) as conn:
            undo = store.get_undo(conn, job_id)
            if undo is None:  # the job never wrote anything
                return False
            ip, before = undo["ip"], undo["before"]
            current = get(conn, ip)
            if before is None:
                return conn.execute(delete(BlockedIp).where(B.ip == ip)).rowcount == 1
            previous_job = uuid.UUID(before["jobId"]) if before["jobId"] else None
            if current is not None and current.reason == before["reason"] and current.job_id == previous_job:
                return False
            if current is not None:
                conn.execute(delete(BlockedIp).where(B.ip == ip))
            created = datetime.fromisoformat(before["createdAt"])
            _put(conn, ip, before["reason"], previous_job, created)
            return True
