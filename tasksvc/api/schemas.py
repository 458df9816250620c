"""The HTTP contract: request and response models (camelCase on the wire)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from tasksvc.clock import rfc3339
from tasksvc.jobtypes.base import BlockedEntry
from tasksvc.models import CompensationStatus
from tasksvc.store import JobRecord

MAX_PAYLOAD_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def check_json(document: Any, max_depth: int = MAX_PAYLOAD_DEPTH) -> None:
    """Refuse (ValueError) a document nested deeper than `max_depth`, or holding a string that
    PostgreSQL could not store or a worker could not encode: a NUL character, a lone surrogate.
    Iterative, and it stops at the first level too deep, so no input can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if level > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((item, level + 1))


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ValueError("strings must not contain NUL characters (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255:
        raise ValueError("must be 1 to 255 characters")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    _check_text(value)
    return value


class JobCreate(BaseModel):
    """A job to run. Unknown fields (such as `status` or `attempts`) are refused."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, Field(min_length=1, max_length=64, examples=["hash"])]
    payload: Annotated[dict[str, Any], Field(examples=[{"data": "abc", "algo": "sha256"}])]
    idempotency_key: Annotated[str | None, Field(alias="idempotencyKey")] = None
    max_attempts: Annotated[StrictInt | None, Field(alias="maxAttempts")] = None

    @field_validator("payload")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json(value)
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return check_idempotency_key(value)


class JobError(BaseModel):
    attempt: int
    type: str
    message: str
    at: str
    retry_in_seconds: float | None = Field(alias="retryInSeconds")


class CompensationPublic(BaseModel):
    status: str = Field(description="running | succeeded | failed | skipped")
    attempts: int
    error: str | None
    finished_at: str | None = Field(alias="finishedAt")


class JobPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    job_id: uuid.UUID = Field(alias="jobId")
    type: str
    status: str
    payload: dict[str, Any]
    idempotency_key: str | None = Field(alias="idempotencyKey")
    attempts: int
    max_attempts: int = Field(alias="maxAttempts")
    result: Any
    errors: list[JobError]
    compensation: CompensationPublic | None
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    started_at: str | None = Field(alias="startedAt")
    finished_at: str | None = Field(alias="finishedAt")
    next_attempt_at: str | None = Field(alias="nextAttemptAt")

    @classmethod
    def of(cls, job: JobRecord) -> dict[str, Any]:
        """The wire form of a job (a dict: cheaper than building and dumping the model)."""
        return {
            "id": str(job.id),
            "jobId": str(job.id),
            "type": job.type,
            "status": job.status.value,
            "payload": job.payload,
            "idempotencyKey": job.idempotency_key,
            "attempts": job.attempts,
            "maxAttempts": job.max_attempts,
            "result": job.result,
            "errors": job.errors,
            "compensation": _compensation(job),
            "createdAt": rfc3339(job.created_at),
            "updatedAt": rfc3339(job.updated_at),
            "startedAt": rfc3339(job.started_at),
            "finishedAt": rfc3339(job.finished_at),
            "nextAttemptAt": rfc3339(job.next_attempt_at),
        }


_SHOWN_AS_RUNNING = {CompensationStatus.PENDING, CompensationStatus.RETRYING, CompensationStatus.RUNNING}


def _compensation(job: JobRecord) -> dict[str, Any] | None:
    status = job.compensation_status
    if status is None:
        return None
    return {
        "status": "running" if status in _SHOWN_AS_RUNNING else status.value,
        "attempts": job.compensation_attempts,
        "error": job.compensation_error,
        "finishedAt": rfc3339(job.compensation_finished_at),
    }


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(alias="nextCursor")


class JobTypePublic(BaseModel):
    name: str
    description: str
    payload_schema: dict[str, Any] = Field(alias="payloadSchema")
    compensates: bool = Field(description="False: compensation is `skipped` (nothing to undo)")


class JobTypeList(BaseModel):
    items: list[JobTypePublic]


class BlockedIpPublic(BaseModel):
    ip: str
    reason: str | None
    job_id: uuid.UUID | None = Field(alias="jobId")
    created_at: str = Field(alias="createdAt")

    @classmethod
    def of(cls, entry: BlockedEntry) -> dict[str, Any]:
        return {
            "ip": entry.ip,
            "reason": entry.reason,
            "jobId": str(entry.job_id) if entry.job_id else None,
            "createdAt": rfc3339(entry.created_at),
        }


class BlockedIpPage(BaseModel):
    items: list[BlockedIpPublic]
    next_cursor: str | None = Field(alias="nextCursor")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
