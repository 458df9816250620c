"""The baselines tasksvc is measured against: bare RQ, with nothing of tasksvc's around it.

- `create_app()`: a FastAPI app (served by the same uvicorn as `tasksvc api`) whose
  `POST /v1/jobs` parses the same body, does one bare `rq.Queue.enqueue` and answers 202.
- `work(data)`: the function bare RQ jobs run (what a `hash` job does: one SHA-256).
- `rq_worker_argv()`: `rq worker -w rq.worker.SimpleWorker` on the baseline queue.

RQ's defaults are kept (pickle serializer, default TTLs): that is what "bare" means.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis import Redis
from rq import Queue

QUEUE_NAME = "bench"


def work(data: str) -> str:
    """The baseline job: what the `hash` job type computes, nothing else."""
    return hashlib.sha256(data.encode()).hexdigest()


def queue(redis: Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=redis)


class JobIn(BaseModel):
    """The same body tasksvc accepts, parsed just as loosely as a bare endpoint would."""

    type: str
    payload: dict[str, Any]


def create_app() -> FastAPI:
    """The baseline API (a uvicorn factory): REDIS_URL from the environment."""
    redis = Redis.from_url(os.environ["REDIS_URL"])
    jobs = queue(redis)
    app = FastAPI(title="bench baseline: one bare RQ enqueue")

    @app.post("/v1/jobs", status_code=202)
    def submit(body: JobIn) -> JSONResponse:
        job = jobs.enqueue(work, str(body.payload.get("data", "")))
        return JSONResponse({"id": job.id}, status_code=202)

    return app


def rq_worker_argv(redis_url: str, name: str, *, burst: bool) -> list[str]:
    """`rq worker` with SimpleWorker (no fork per job), quiet like tasksvc's LOG_LEVEL=WARNING."""
    argv = [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker", "--url", redis_url]
    argv += ["--logging_level", "WARNING", "--name", name]
    return [*argv, "--burst", QUEUE_NAME] if burst else [*argv, QUEUE_NAME]
