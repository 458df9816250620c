"""Running the real commands from tests: ports, waiting on conditions, stopping process trees."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest

TASKSVC = [sys.executable, "-m", "tasksvc.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.TransportError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    return {
        **keep,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WORKER_METRICS_PORT": str(free_port()),
        "LOG_FORMAT": "json",
        "RETRY_BASE_DELAY": "0.05",
    }


@pytest.fixture
def started(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def _start(*args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{args[0]}-{len(procs)}.log").open("wb") as log:
            proc = subprocess.Popen([*TASKSVC, *args], env={**env, **extra_env}, cwd=tmp_path, stdout=log, stderr=log)
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        kill_tree(proc)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started and every process below it."""
    if proc.poll() is not None:
        return
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def start_api(started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str], *args: str, **extra: str) -> str:
    """Migrate, start `tasksvc api` on a free port and wait until it is ready; its base URL."""
    migrated = subprocess.run([*TASKSVC, "migrate"], env={**env, **extra}, check=False, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    started("api", "--port", str(port), *args, **extra)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="the API to be ready")
    return base
