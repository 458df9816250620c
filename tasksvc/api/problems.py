"""Errors to RFC 9457 problem+json: the one table that maps errors to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasksvc import errors

log = logging.getLogger("tasksvc.api")
TYPE_BASE = "https://tasksvc.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class PayloadTooLarge(errors.TasksvcError):
    """The request body is larger than MAX_BODY_BYTES."""


class BadRequest(errors.TasksvcError):
    """The request is malformed."""


#: error class -> (HTTP status, problem type, title)
PROBLEMS: dict[type[errors.TasksvcError], tuple[int, str, str]] = {
    errors.JobNotFound: (404, "not-found", "Not found"),
    errors.BlockedIpNotFound: (404, "not-found", "Not found"),
    errors.InvalidCursor: (400, "bad-request", "Bad request"),
    errors.UnknownJobType: (422, "validation", "Validation failed"),
    errors.PayloadInvalid: (422, "validation", "Validation failed"),
    errors.Conflict: (409, "conflict", "Conflict"),
    errors.IdempotencyKeyMismatch: (422, "idempotency-key-mismatch", "Idempotency key reused"),
    errors.IdempotencyKeyInUse: (409, "idempotency-key-in-use", "Idempotency key in use"),
    errors.QueueFull: (503, "queue-full", "Queue full"),
    errors.BackendUnavailable: (503, "backend-unavailable", "Backend unavailable"),
    PayloadTooLarge: (413, "payload-too-large", "Payload too large"),
    BadRequest: (400, "bad-request", "Bad request"),
}

_HTTP_STATUS_TYPES = {404: "not-found", 401: "unauthorized", 413: "payload-too-large", 409: "conflict"}


def problem(
    status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _for_error(exc: errors.TasksvcError) -> JSONResponse:
    status, kind, title = next(v for cls, v in PROBLEMS.items() if isinstance(exc, cls))
    headers = None
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
    extra = {"errors": _errors_of(exc)}
    return problem(status, kind, title, exc.detail, headers, **extra)


def _errors_of(exc: errors.TasksvcError) -> list[dict[str, Any]] | None:
    if isinstance(exc, errors.PayloadInvalid):
        return exc.errors
    if isinstance(exc, errors.UnknownJobType):
        return [{"loc": ["type"], "msg": exc.detail, "type": "unknown_job_type"}]
    return None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(errors.TasksvcError)
    async def _tasksvc(_req: Request, exc: errors.TasksvcError) -> JSONResponse:
        return _for_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        found = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in found):
            return problem(400, "bad-request", "Bad request", "The body is not valid JSON.")
        return problem(422, "validation", "Validation failed", "The request is not valid.", errors=found)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_STATUS_TYPES.get(exc.status_code, "bad-request")
        return problem(exc.status_code, kind, str(exc.detail), str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(RedisError)
    async def _backend(_req: Request, exc: Exception) -> JSONResponse:
        log.warning("backend error: %s", type(exc).__name__)
        return problem(
            503,
            "backend-unavailable",
            "Backend unavailable",
            "The database or Redis is unavailable.",
            {"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return problem(500, "internal", "Internal error", "An unexpected error occurred.")
