"""What a job type is: a payload model, a `run` handler and an optional `compensate`.

Handlers see plain data and the small ports they need (`BlockList`); they never import
FastAPI, RQ or a database session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from tasksvc.errors import TasksvcError

JSONValue = Any  # what json.dumps accepts; results and undo records are JSON documents


class Payload(BaseModel):
    """Base of every payload model: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Payload)


class SimulatedFailure(TasksvcError):
    """Simulated failure requested by the payload."""


@dataclass(frozen=True)
class BlockedEntry:
    ip: str
    reason: str | None
    job_id: uuid.UUID | None
    created_at: datetime


class BlockList(Protocol):
    """The `blocked_ips` table as a job type sees it."""

    def block(self, ip: str, reason: str | None, job_id: uuid.UUID) -> bool:
        """Upsert the row; remember what was there first (for compensation); True if it changed."""
        ...

    def unblock(self, ip: str, job_id: uuid.UUID) -> bool:
        """Delete the row; remember what was there first; True if a row was removed."""
        ...

    def restore(self, job_id: uuid.UUID) -> bool:
        """Put back what the job found before its first write; True if anything changed."""
        ...


@dataclass(frozen=True)
class RunContext:
    """What an attempt knows besides its payload."""

    job_id: uuid.UUID
    attempt: int
    blocklist: BlockList


@dataclass(frozen=True)
class CompensationContext:
    """What a compensation knows: the job and what its attempts recorded."""

    job_id: uuid.UUID
    attempts: int
    errors: list[dict[str, Any]]
    blocklist: BlockList


@dataclass(frozen=True)
class JobType(Generic[P]):
    """A registered job type. `compensate=None` means there is nothing to undo (`skipped`)."""

    name: str
    payload_model: type[P]
    run: Callable[[P, RunContext], JSONValue]
    compensate: Callable[[P, CompensationContext], JSONValue] | None = None
    timeout_s: float | None = None
    description: str = ""

    def parse(self, payload: dict[str, Any]) -> P:
        """Validate a payload (raises pydantic.ValidationError)."""
        return self.payload_model.model_validate(payload)

    def json_schema(self) -> dict[str, Any]:
        return self.payload_model.model_json_schema(by_alias=True)
