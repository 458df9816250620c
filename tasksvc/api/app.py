"""The FastAPI app factory: `create_app(settings)` builds everything it uses."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_fastapi_instrumentator import Instrumentator
from redis import Redis
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasksvc import __version__
from tasksvc.api import problems, routes
from tasksvc.api.waiters import Waiters
from tasksvc.auth import ApiKey, scope_of
from tasksvc.config import Settings
from tasksvc.db import make_engine
from tasksvc.jobtypes import Registry, default_registry
from tasksvc.metrics import LiveGauges, Metrics
from tasksvc.queue import MessageQueue, connect, worker_count
from tasksvc.service import JobService

log = logging.getLogger("tasksvc.api")


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, whether declared (Content-Length) or streamed.

    The body is read (at most `max_bytes` of it) before the app sees the request, so an
    oversized stream is answered here and never half-parsed by a route.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the body is larger than {self.max_bytes} bytes (MAX_BODY_BYTES)"
        await problems.problem(413, "payload-too-large", "Payload too large", detail)(scope, receive, send)


class ApiKeys:
    """With API_KEYS set, every /v1 request needs `Authorization: Bearer <key>` (else 401, before
    its body is read); the key's scope goes to `request.state.scope`. Open API: scope ""."""

    def __init__(self, app: ASGIApp, keys: tuple[ApiKey, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key_scope = ""
        if self.keys and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization")
            found = scope_of(self.keys, header.decode("latin-1") if header is not None else None)
            if found is None:
                detail = "a valid API key is required: Authorization: Bearer <key>"
                response = problems.problem(
                    401, "unauthorized", "Unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="tasksvc"'}
                )
                await response(scope, receive, send)
                return
            key_scope = found
        scope.setdefault("state", {})["scope"] = key_scope
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    redis: Redis | None = None,
    registry: CollectorRegistry | None = None,
    job_types: Registry | None = None,
) -> FastAPI:
    """The API. `engine`/`redis` may be handed in (tests, `tasksvc dev`); else built from settings."""
    if settings.redis_url is None and redis is None:
        raise ValueError("REDIS_URL is not set")
    # Sync routes run in anyio's thread pool (40 threads): as many connections, so none is churned.
    engine = engine or make_engine(settings.sqlalchemy_url, pool_size=20)
    redis = redis or connect(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    metrics_registry = registry or CollectorRegistry()
    job_types = job_types if job_types is not None else default_registry()
    metrics = Metrics(metrics_registry)
    metrics.prime(job_types)
    service = JobService(settings, engine, MessageQueue(redis), job_types, metrics)

    waiters = Waiters(settings.redis_url.get_secret_value()) if settings.redis_url else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.api_keys is None:
            log.warning("API_KEYS is not set: the API is open to anyone who can reach it")
        if waiters is not None:
            await waiters.start()
        yield
        if waiters is not None:
            await waiters.stop()
        redis.close()
        engine.dispose()

    app = FastAPI(
        title="tasksvc",
        version=__version__,
        summary="Background jobs over HTTP: retries with backoff, compensation, idempotency, backpressure.",
        lifespan=lifespan,
    )
    gauges = LiveGauges(service.bound.depth, settings.queue_max_size, lambda: worker_count(redis))
    metrics_registry.register(gauges)
    app.state.service = service
    app.state.waiters = waiters
    app.state.settings = settings
    problems.install(app)
    app.include_router(routes.router)
    app.include_router(routes.ops)
    Instrumentator(
        should_group_status_codes=False, excluded_handlers=["/metrics"], registry=metrics_registry
    ).instrument(app)

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        """Prometheus text format. Under `tasksvc api --workers N` (multiprocess mode), every
        uvicorn process's counters are added up from PROMETHEUS_MULTIPROC_DIR."""
        registry = metrics_registry
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(gauges)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeys, keys=settings.keys)  # outermost: a stranger's body is never read
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory used by `tasksvc api`: settings from the environment."""
    from tasksvc.config import load_settings

    return create_app(load_settings())
