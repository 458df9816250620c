"""Shared fixtures: real SQLite and PostgreSQL databases, a real Redis DB of our own, real workers.

- `TASKSVC_TEST_PG` (default `postgresql://postgres@127.0.0.1:5432/postgres`): the server
  where the suite creates (and at the end drops) its own database `tasksvc_test_<pid>`.
- `TASKSVC_TEST_REDIS` (default `redis://127.0.0.1:6379/13`): a Redis DB number that the
  suite owns; it is flushed before each test that uses it, and never any other DB.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from redis import Redis
from sqlalchemy import Engine, text

from tasksvc import runner
from tasksvc.api.app import create_app
from tasksvc.config import Settings
from tasksvc.db import make_engine
from tasksvc.jobtypes import Registry
from tasksvc.metrics import Metrics
from tasksvc.migrate import upgrade
from tasksvc.queue import MessageQueue, make_worker
from tasksvc.worker import build_context, work_until_idle
from tests.testtypes import Probe, registry_with

pytest_plugins = ["tests.processes"]  # fixtures `env` and `started`: the real commands as subprocesses
PG_ADMIN_URL = os.environ.get("TASKSVC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TASKSVC_TEST_REDIS", "redis://127.0.0.1:6379/13")
TABLES = ("jobs", "idempotency_keys", "blocked_ips")


def _pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of the suite's own, migrated once; dropped at the end."""
    name = f"tasksvc_test_{os.getpid()}"
    try:
        admin = psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); .ci/run starts it")
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(Settings(_env_file=None, database_url=url).sqlalchemy_url)  # type: ignore[call-arg]
    upgrade(engine)
    engine.dispose()
    yield url
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (cheaper than migrating again)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses the database runs on SQLite and on PostgreSQL, with empty tables."""
    if request.param == "sqlite":
        path = tmp_path / "tasksvc.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    return url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The suite's own Redis DB, empty at the start of the test."""
    client = Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); .ci/run starts it")
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def make_settings(database_url: str, redis_url: str) -> Callable[..., Settings]:
    def _make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": redis_url,
            "retry_base_delay": 0.05,
            "retry_max_delay": 1.0,
            "log_format": "text",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return _make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.sqlalchemy_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@dataclass
class Workers:
    """Real RQ SimpleWorkers driven in-process (burst), with the real runner."""

    ctx: runner.WorkerContext
    registry: CollectorRegistry

    def drain(self) -> None:
        """Run every message, promoting retries as they come due, until nothing waits."""
        runner.bind(self.ctx)
        try:
            worker = make_worker(self.ctx.mq.redis, name=f"test-{uuid.uuid4().hex[:8]}")
            work_until_idle(self.ctx, worker.work)
        finally:
            runner.bind(None)

    def run_once(self) -> None:
        """Run the messages on the queue now, without waiting for retries to come due."""
        runner.bind(self.ctx)
        try:
            make_worker(self.ctx.mq.redis, name=f"test-{uuid.uuid4().hex[:8]}").work(burst=True)
        finally:
            runner.bind(None)

    @property
    def mq(self) -> MessageQueue:
        return self.ctx.mq


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def job_types(probe: Probe) -> Registry:
    """The built-in job types plus `probe` (slow, failing, counting: see tests/testtypes.py)."""
    return registry_with(probe.job_type(timeout_s=0.5))


@pytest.fixture
def workers(settings: Settings, job_types: Registry) -> Iterator[Workers]:
    registry = CollectorRegistry()
    ctx = build_context(settings, Metrics(registry), registry=job_types)
    yield Workers(ctx, registry)
    ctx.engine.dispose()
    ctx.mq.redis.close()


@pytest.fixture
def client(settings: Settings, job_types: Registry) -> Iterator[TestClient]:
    app = create_app(settings, registry=CollectorRegistry(), job_types=job_types)
    with TestClient(app) as c:
        yield c


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())  # noqa: S608 - fixed names
