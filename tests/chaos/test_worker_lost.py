"""Workers that die or stall mid-attempt: the job is detected and re-run within WORKER_LOST_TIMEOUT."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import httpx2 as httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.conftest import job
from tests.processes import wait_for

pytestmark = pytest.mark.slow
LOST_TIMEOUT_S = 2.0


def worker_children(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [p for p in psutil.Process(supervisor.pid).children() if "spawn_main" in " ".join(p.cmdline())]


def test_sigkilled_worker_is_detected_and_the_job_rerun(
    chaos_client: TestClient, probe_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    supervisor = probe_worker(processes=1)
    job_id = chaos_client.post(
        "/v1/jobs", json={"type": "probe", "payload": {"sleep_s": 30, "slow_attempts": 1}}
    ).json()["id"]
    wait_for(lambda: job(chaos_client, job_id)["status"] == "running", what="attempt 1 to start")
    (child,) = wait_for(lambda: worker_children(supervisor), what="the worker process")
    killed_at = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)

    done = wait_for(lambda: (j := job(chaos_client, job_id))["status"] == "succeeded" and j, timeout_s=30, what="rerun")
    assert done["attempts"] == 2
    assert done["errors"][0]["type"] == "WorkerLost"
    assert done["errors"][0]["attempt"] == 1
    detected_after = time.monotonic() - killed_at
    assert detected_after < LOST_TIMEOUT_S + 3  # lost within WORKER_LOST_TIMEOUT, then retried and run
    assert supervisor.poll() is None  # the supervisor restarted its worker process


def success_attempts(metrics_url: str) -> float:
    """tasksvc_job_attempts_total{type="probe",outcome="success"} as the worker serves it."""
    for family in text_string_to_metric_families(httpx.get(metrics_url).text):
        for sample in family.samples:
            if sample.name == "tasksvc_job_attempts_total" and sample.labels == {"type": "probe", "outcome": "success"}:
                return sample.value
    return 0.0


def test_stalled_worker_cannot_finish_an_attempt_that_was_declared_lost(
    chaos_client: TestClient, probe_worker: Callable[..., subprocess.Popen[bytes]], env: dict[str, str]
) -> None:
    supervisor = probe_worker(processes=2)
    children = wait_for(lambda: len(c := worker_children(supervisor)) == 2 and c, what="two worker processes")
    job_id = chaos_client.post(
        "/v1/jobs", json={"type": "probe", "payload": {"sleep_s": 1.5, "slow_attempts": 1}}
    ).json()["id"]
    wait_for(lambda: job(chaos_client, job_id)["status"] == "running", what="attempt 1 to start")
    for child in children:  # SIGSTOP both: the one running attempt 1 stalls, its lease runs out
        child.send_signal(signal.SIGSTOP)
    try:
        lost = wait_for(
            lambda: (j := job(chaos_client, job_id))["errors"] and j, timeout_s=10, what="attempt 1 declared lost"
        )
        assert lost["errors"][0]["type"] == "WorkerLost"
    finally:
        for child in children:
            child.send_signal(signal.SIGCONT)
    done = wait_for(lambda: (j := job(chaos_client, job_id))["status"] == "succeeded" and j, timeout_s=30, what="job")
    assert done["attempts"] == 2
    assert done["result"] == {"attempt": 2}
    # The stalled attempt 1 wakes up, finishes its sleep and tries to record its success: refused.
    metrics_url = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
    wait_for(lambda: success_attempts(metrics_url) == 2, timeout_s=15, what="the stalled attempt to finish")
    again = job(chaos_client, job_id)
    assert again["status"] == "succeeded"
    assert again["attempts"] == 2
    assert again["result"] == {"attempt": 2}
    assert again["finishedAt"] == done["finishedAt"]


def test_sigterm_lets_the_current_job_finish_then_exits(
    chaos_client: TestClient, probe_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    supervisor = probe_worker(processes=1)
    job_id = chaos_client.post("/v1/jobs", json={"type": "probe", "payload": {"sleep_s": 1.5}}).json()["id"]
    wait_for(lambda: job(chaos_client, job_id)["status"] == "running", what="the attempt to start")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    done = job(chaos_client, job_id)
    assert done["status"] == "succeeded"  # finished, not abandoned to WorkerLost
    assert done["attempts"] == 1
    assert done["errors"] == []
