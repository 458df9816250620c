"""What the bench runs on: its own PostgreSQL database and one Redis DB, emptied between phases.

The database (`tasksvc_bench` by default) is dropped and recreated at the start and dropped at
the end; nothing else on the server is touched. The Redis URL must name its DB explicitly
(`redis://host:port/N`), because the bench FLUSHDBs it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from redis import Redis
from redis.exceptions import RedisError

from tasksvc.config import Settings, load_settings
from tasksvc.db import make_engine
from tasksvc.migrate import upgrade

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
DEFAULT_DB_NAME = "tasksvc_bench"
QUEUE_MAX_SIZE = 10_000_000  # the submit phase lets the queue grow: never the bound
REPO_ROOT = Path(__file__).resolve().parent.parent
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Backends:
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    redis_url: str = DEFAULT_REDIS_URL
    db_name: str = DEFAULT_DB_NAME

    def __post_init__(self) -> None:
        path = urlsplit(self.redis_url).path.strip("/")
        if not path.isdigit():
            raise ValueError(f"the Redis URL must name its DB (redis://host:port/N): the bench flushes it: {path!r}")

    @property
    def database_url(self) -> str:
        """The bench database's URL: the admin URL with its database name replaced."""
        parts = urlsplit(self.pg_admin_url)
        return urlunsplit(parts._replace(path="/" + self.db_name))

    def settings(self, **overrides: object) -> Settings:
        """tasksvc Settings for in-process use (no `.env` is read: the bench says everything)."""
        return load_settings(
            _env_file=None,
            database_url=self.database_url,
            redis_url=self.redis_url,
            queue_max_size=QUEUE_MAX_SIZE,
            log_level="WARNING",
            **overrides,
        )

    def child_env(self, **extra: str) -> dict[str, str]:
        """The environment of every process the bench starts: only what it needs, nothing inherited."""
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
        return {
            **env,
            "PYTHONPATH": str(REPO_ROOT),  # `bench.baseline` for uvicorn and rq workers
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "QUEUE_MAX_SIZE": str(QUEUE_MAX_SIZE),
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def pg(self) -> psycopg.Connection[tuple[object, ...]]:
        """A plain autocommit psycopg connection to the bench database."""
        return psycopg.connect(self.database_url, autocommit=True)

    def recreate_database(self) -> None:
        """Drop and create the bench database (only that one), then migrate it."""
        name = sql.Identifier(self.db_name)
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        engine = make_engine(self.settings().sqlalchemy_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def drop_database(self) -> None:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.pg_admin_url, autocommit=True) as conn,
        ):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db_name)))

    def empty(self) -> None:
        """No job in the database, nothing in the bench's Redis DB."""
        with self.pg() as conn:
            conn.execute("TRUNCATE jobs, idempotency_keys, blocked_ips")
        with self.redis() as redis:
            redis.flushdb()

    def empty_redis(self) -> None:
        """Leave the bench's Redis DB empty (best effort: the run is over)."""
        with contextlib.suppress(RedisError), self.redis() as redis:
            redis.flushdb()
