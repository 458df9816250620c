"""The one clock: timezone-aware UTC, and its RFC 3339 rendering with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """`2026-12-04T15:00:01.250Z`: UTC, millisecond precision, `Z` suffix."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
