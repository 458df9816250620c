"""The `tasksvc` command: api | worker | migrate | dev.

Imports are made inside each command: `tasksvc worker` must set PROMETHEUS_MULTIPROC_DIR
before prometheus_client is imported anywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from tasksvc.config import Settings, load_settings
from tasksvc.errors import ConfigError

_LOGS = ("LOG_LEVEL", "LOG_FORMAT")
_RETRY = ("RETRY_MAX_ATTEMPTS", "RETRY_BASE_DELAY", "RETRY_BACKOFF", "RETRY_JITTER_RATIO", "RETRY_MAX_DELAY")
#: command -> the variables it reads (every variable is validated at start by every command)
READS: dict[str, tuple[str, ...]] = {
    "api": (
        "DATABASE_URL",
        "REDIS_URL",
        "API_KEYS",
        "MAX_BODY_BYTES",
        "QUEUE_MAX_SIZE",
        "IDEMPOTENCY_TTL",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_MAX_ATTEMPTS_LIMIT",
        *_LOGS,
    ),
    "worker": (
        "DATABASE_URL",
        "REDIS_URL",
        *_RETRY,
        "QUEUE_MAX_SIZE",
        "JOB_TIMEOUT",
        "WORKER_LOST_TIMEOUT",
        "RECONCILE_INTERVAL",
        "WORKER_METRICS_PORT",
        *_LOGS,
    ),
    "migrate": ("DATABASE_URL",),
    "dev": (
        "DATABASE_URL",
        "REDIS_URL (unset: an embedded Redis)",
        "and everything `api` and `worker` read",
    ),
}


def _env_help(command: str) -> str:
    return f"reads (environment or .env): {', '.join(READS[command])}. See .env.example and the README."


ENV_HELP = "Configuration: environment variables or .env (see .env.example and the README)."


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count, where Linux says)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tasksvc", description="Background jobs over HTTP.", epilog=ENV_HELP)
    sub = top.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    api = sub.add_parser(
        "api",
        help="serve the HTTP API",
        formatter_class=fmt,
        epilog=_env_help("api"),
        description="Serve the HTTP API (uvicorn). Needs REDIS_URL.",
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")

    worker = sub.add_parser(
        "worker",
        help="run worker processes",
        formatter_class=fmt,
        epilog=_env_help("worker"),
        description="Run N worker processes with the retry promoter, the reconciler and /metrics "
        "on WORKER_METRICS_PORT. SIGTERM: finish current jobs, then exit. Needs REDIS_URL.",
    )
    worker.add_argument("--processes", type=int, default=_usable_cpus(), help="default: the CPUs this process may use")
    worker.add_argument("--burst", action="store_true", help="exit once no job is waiting")
    worker.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics (default: all, for Prometheus)")

    sub.add_parser(
        "migrate",
        help="apply database migrations",
        formatter_class=fmt,
        epilog=_env_help("migrate"),
        description="Create or upgrade the schema of DATABASE_URL (Alembic).",
    )

    dev = sub.add_parser(
        "dev",
        help="API + workers + embedded Redis on SQLite, one command",
        formatter_class=fmt,
        epilog=_env_help("dev"),
        description="Migrate DATABASE_URL, start an embedded Redis (unless REDIS_URL is set), "
        "N worker processes and the API on 127.0.0.1. Ctrl-C stops all of it.",
    )
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--workers", type=int, default=2, help="worker processes")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command in ("api", "worker") and settings.redis_url is None:
            raise ConfigError("REDIS_URL", "is not set (only `tasksvc dev` starts an embedded Redis)")
    except ConfigError as exc:
        print(f"tasksvc: {exc}", file=sys.stderr)
        return 2
    if args.command in ("api", "worker"):
        problem = _schema_problem(settings)
        if problem is not None:
            print(f"tasksvc: {problem}", file=sys.stderr)
            return 2
    command = {"api": _api, "worker": _worker, "migrate": _migrate, "dev": _dev}[args.command]
    return command(settings, args)


def _schema_problem(settings: Settings) -> str | None:
    """Why this database can never serve this version (not migrated), or None.

    A database that does not answer yet is not a reason to stop: the API starts unready (503 on
    /readyz) and workers retry, as they do when it goes away later.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from tasksvc.db import make_engine
    from tasksvc.migrate import is_current

    engine = make_engine(settings.sqlalchemy_url, pool_size=1)
    try:
        if not is_current(engine):
            return "the database (DATABASE_URL) is not migrated to this version: run `tasksvc migrate`"
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return None


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from tasksvc.logs import configure_logging

    configure_logging(settings)
    metrics_dir = None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tasksvc-api-metrics-")
    try:
        uvicorn.run(
            "tasksvc.api.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="tasksvc-worker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from tasksvc.logs import configure_logging
    from tasksvc.worker import Supervisor, serve_metrics

    try:
        configure_logging(settings)
        serve_metrics(settings, host=args.metrics_host)
        return Supervisor(settings, processes=max(1, args.processes), burst=args.burst).run()
    except ConfigError as exc:
        print(f"tasksvc: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from tasksvc.db import make_engine
    from tasksvc.migrate import upgrade

    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    engine.dispose()
    print("tasksvc: database is up to date")
    return 0


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from tasksvc.dev import run_dev

    return run_dev(settings, port=args.port, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
