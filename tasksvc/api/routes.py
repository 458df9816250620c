"""The routes of SPEC section 2. Handlers translate HTTP to service calls and back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tasksvc.api.problems import MEDIA_TYPE, BadRequest
from tasksvc.api.schemas import (
    BlockedIpPage,
    BlockedIpPublic,
    JobCreate,
    JobPage,
    JobPublic,
    JobTypeList,
    Problem,
    check_idempotency_key,
)
from tasksvc.api.waiters import Waiters
from tasksvc.errors import BlockedIpNotFound, JobNotFound, PayloadInvalid
from tasksvc.jobtypes.block_ip import normalise_ip
from tasksvc.models import JobStatus
from tasksvc.service import JobService, Submission
from tasksvc.store import JobRecord

MAX_WAIT_S = 30
POLL_S = 0.5
_PROBLEM = {"model": Problem, "content": {MEDIA_TYPE: {}}}
router = APIRouter(responses={401: _PROBLEM})  # /v1: behind the ApiKeys middleware (see create_app)
ops = APIRouter()  # health and readiness: open


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def _scope(request: Request) -> str:
    scope: str = request.state.scope  # set by `tasksvc.api.app.ApiKeys`
    return scope


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound() from None


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobPublic,
    responses={
        200: {"model": JobPublic, "description": "Idempotent replay"},
        **{code: _PROBLEM for code in (400, 409, 413, 422, 503)},
    },
    tags=["jobs"],
)
def submit_job(
    request: Request,
    body: Annotated[JobCreate, Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Submit a job: 202 with the job (its `Location`), or 200 when an idempotency key replays."""
    key = _key(idempotency_key, body.idempotency_key)
    service = _service(request)
    done = service.submit(
        Submission(body.type, body.payload, idempotency_key=key, max_attempts=body.max_attempts),
        scope=_scope(request),
    )
    headers = {"Location": f"/v1/jobs/{done.job.id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(JobPublic.of(done.job), status_code=200 if done.replayed else 202, headers=headers)


def _key(header: str | None, body: str | None) -> str | None:
    if header is not None and body is not None and header != body:
        raise BadRequest("the Idempotency-Key header and idempotencyKey differ")
    if header is not None:
        try:
            check_idempotency_key(header)
        except ValueError as exc:
            raise PayloadInvalid(
                errors=[{"loc": ["header", "Idempotency-Key"], "msg": str(exc), "type": "value_error"}]
            ) from None
    return header if header is not None else body


@router.get("/v1/jobs/{job_id}", response_model=JobPublic, responses={404: _PROBLEM, 422: _PROBLEM}, tags=["jobs"])
async def get_job(
    request: Request,
    job_id: str,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to hold the request until the job is terminal")
    ] = 0,
) -> dict[str, Any]:
    """One job, whatever its status. With `?wait=N`, answers as soon as it is terminal, or after N s."""
    service, jid, scope = _service(request), _job_id(job_id), _scope(request)
    job = await run_in_threadpool(service.get, jid, scope)
    if wait > 0 and not job.status.terminal:
        job = await _wait_terminal(request, service, jid, scope, wait)
    return JobPublic.of(job)


async def _wait_terminal(request: Request, service: JobService, jid: uuid.UUID, scope: str, wait_s: float) -> JobRecord:
    waiters: Waiters | None = request.app.state.waiters
    deadline = asyncio.get_running_loop().time() + wait_s
    if waiters is None or not waiters.ready.is_set():
        return await _poll_terminal(service, jid, scope, deadline)
    with waiters.registered(str(jid)) as finished:
        job = await run_in_threadpool(service.get, jid, scope)  # after registering: no completion is missed
        if job.status.terminal:
            return job
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    return await run_in_threadpool(service.get, jid, scope)


async def _poll_terminal(service: JobService, jid: uuid.UUID, scope: str, deadline: float) -> JobRecord:
    """Fallback while the completion listener is not connected: read the row every POLL_S."""
    loop = asyncio.get_running_loop()
    while True:
        job = await run_in_threadpool(service.get, jid, scope)
        left = deadline - loop.time()
        if job.status.terminal or left <= 0:
            return job
        await asyncio.sleep(min(POLL_S, left))


@router.get("/v1/jobs", response_model=JobPage, responses={400: _PROBLEM, 422: _PROBLEM}, tags=["jobs"])
def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
) -> dict[str, Any]:
    """Jobs, newest first, keyset-paginated: pass `nextCursor` back as `cursor`."""
    page = _service(request).page(scope=_scope(request), limit=limit, cursor=cursor, status=status, job_type=type)
    return {"items": [JobPublic.of(j) for j in page.items], "nextCursor": page.next_cursor}


@router.post(
    "/v1/jobs/{job_id}/cancel", response_model=JobPublic, responses={404: _PROBLEM, 409: _PROBLEM}, tags=["jobs"]
)
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel a `queued` or `retrying` job. A running or finished job answers 409."""
    return JobPublic.of(_service(request).cancel(_job_id(job_id), _scope(request)))


@router.get("/v1/job-types", response_model=JobTypeList, tags=["job types"])
def job_types(request: Request) -> dict[str, Any]:
    """Every job type with the JSON Schema of its payload."""
    registry = _service(request).registry
    return {
        "items": [
            {
                "name": t.name,
                "description": t.description,
                "payloadSchema": t.json_schema(),
                "compensates": t.compensate is not None,
            }
            for t in registry.values()
        ]
    }


@router.get("/v1/blocked-ips", response_model=BlockedIpPage, responses={400: _PROBLEM}, tags=["blocked IPs"])
def list_blocked_ips(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """What `block_ip` jobs have written, newest first."""
    items, nxt = _service(request).blocked_ips(limit=limit, cursor=cursor)
    return {"items": [BlockedIpPublic.of(e) for e in items], "nextCursor": nxt}


@router.get(
    "/v1/blocked-ips/{ip:path}", response_model=BlockedIpPublic, responses={404: _PROBLEM}, tags=["blocked IPs"]
)
def get_blocked_ip(request: Request, ip: str) -> dict[str, Any]:
    """One address or network (any spelling of it: `1.2.3.4/32` finds `1.2.3.4`)."""
    try:
        normal = normalise_ip(ip)
    except ValueError:
        raise BlockedIpNotFound() from None
    return BlockedIpPublic.of(_service(request).blocked_ip(normal))


@ops.get("/healthz", tags=["operations"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops.get("/readyz", tags=["operations"])
def readyz(request: Request) -> JSONResponse:
    """Readiness: the database and Redis answer (503 otherwise)."""
    checks = _service(request).ready()
    ok = all(checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
