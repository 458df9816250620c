"""The real commands as a user runs them: `tasksvc api`, `tasksvc worker`, `tasksvc dev`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import psutil
import pytest

from tests.processes import TASKSVC, free_port, start_api, stop, wait_for

pytestmark = pytest.mark.slow


def assert_refused(command: str, env: dict[str, str], named: str) -> None:
    """`tasksvc <command>` stops at once with exit 2 and one line on stderr that names `named`."""
    out = subprocess.run([*TASKSVC, command], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert named in out.stderr


def test_api_and_worker_processes_run_a_job_end_to_end(
    started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str], database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        assert subprocess.run([*TASKSVC, "migrate"], env=env, check=False, capture_output=True).returncode == 0
    port = free_port()
    api = started("api", "--port", str(port))
    worker = started("worker", "--processes", "2")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="the API to be ready")

    resp = httpx.post(f"{base}/v1/jobs", json={"type": "hash", "payload": {"data": "abc"}})
    assert resp.status_code == 202
    job_url = base + resp.headers["Location"]
    done = wait_for(lambda: (j := httpx.get(job_url).json())["status"] == "succeeded" and j, what="the job")
    assert done["result"]["digest"].startswith("ba7816bf")

    metrics_url = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
    text = wait_for(lambda: httpx.get(metrics_url).text, what="worker metrics")
    assert 'tasksvc_job_attempts_total{outcome="success",type="hash"} 1.0' in text

    assert stop(api) in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
    assert stop(worker) == 0


def test_api_and_worker_refuse_to_start_without_redis_url(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "REDIS_URL"}
    for command in ("api", "worker"):
        assert_refused(command, env, "REDIS_URL")


def test_bad_configuration_stops_the_process_with_one_line(env: dict[str, str]) -> None:
    assert_refused("worker", {**env, "RETRY_JITTER_RATIO": "1.5"}, "RETRY_JITTER_RATIO")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dev_stack_serves_and_ctrl_c_leaves_nothing_behind(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env = {**keep, "WORKER_METRICS_PORT": str(free_port()), "LOG_FORMAT": "text"}
    with (tmp_path / "dev.log").open("wb") as log:
        dev = subprocess.Popen(
            [*TASKSVC, "dev", "--port", str(port), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout_s=60, what="tasksvc dev")
        assert (tmp_path / "tasksvc.db").exists()  # the default SQLite file, migrated
        resp = httpx.post(f"{base}/v1/jobs", json={"type": "block_ip", "payload": {"ip": "192.0.2.10"}})
        job_url = base + resp.headers["Location"]
        wait_for(lambda: httpx.get(job_url).json()["status"] == "succeeded", what="the job")
        assert httpx.get(f"{base}/v1/blocked-ips/192.0.2.10").status_code == 200
        printed = (tmp_path / "dev.log").read_text()
        assert f"{base}/docs" in printed
        assert f"{base}/metrics" in printed
        family = [dev.pid] + [p.pid for p in psutil.Process(dev.pid).children(recursive=True)]
        assert any("redis-server" in " ".join(psutil.Process(p).cmdline()) for p in family[1:])
        listening = [
            c.laddr for p in family for c in psutil.Process(p).net_connections("inet") if c.status == psutil.CONN_LISTEN
        ]
        assert {addr.port for addr in listening} >= {port, int(env["WORKER_METRICS_PORT"])}
        assert {addr.ip for addr in listening} == {"127.0.0.1"}  # the dev stack is reachable from this machine only
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = dev.wait(timeout=60)
    assert code == 0
    leftovers = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []


def test_api_with_several_uvicorn_workers_adds_up_its_counters(
    started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str]
) -> None:
    base = start_api(started, env, "--workers", "2")
    for i in range(6):  # new connections: spread over both uvicorn processes
        assert httpx.post(f"{base}/v1/jobs", json={"type": "hash", "payload": {"data": str(i)}}).status_code == 202
    for _ in range(4):  # whichever process answers, the totals are the sum of both
        text = httpx.get(f"{base}/metrics").text
        assert 'tasksvc_jobs_submitted_total{type="hash"} 6.0' in text
        assert "tasksvc_queue_depth 6.0" in text
        assert "tasksvc_queue_capacity 10000.0" in text


def test_worker_metrics_port_in_use_is_one_line_naming_the_variable(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused("worker", {**env, "WORKER_METRICS_PORT": str(port)}, "WORKER_METRICS_PORT")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dev_stops_everything_and_fails_when_its_api_cannot_start(tmp_path: Path, database_url: str) -> None:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env = {**keep, "WORKER_METRICS_PORT": str(free_port()), "LOG_FORMAT": "text"}
    with socket.socket() as taken:  # the API's port is already in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dev = subprocess.run(
            [*TASKSVC, "dev", "--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert dev.returncode == 1
    assert "`tasksvc api` exited" in dev.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_and_worker_refuse_an_unmigrated_database(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    for command in ("api", "worker"):
        assert_refused(command, env, "tasksvc migrate")


def test_worker_burst_runs_everything_waiting_then_exits(
    started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str]
) -> None:
    base = start_api(started, env)
    ids = [
        httpx.post(f"{base}/v1/jobs", json={"type": "hash", "payload": payload}).json()["id"]
        for payload in ({"data": "a"}, {"data": "b", "failTimes": 2}, {"data": "c", "fail": True})
    ]
    burst = started("worker", "--burst", "--processes", "1")
    assert burst.wait(timeout=60) == 0  # it returns once nothing waits, retries included
    statuses = [httpx.get(f"{base}/v1/jobs/{i}").json()["status"] for i in ids]
    assert statuses == ["succeeded", "succeeded", "failed"]
