"""Redis restarted empty and database connections dropped: no acknowledged job is lost."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from tasksvc.api.app import create_app
from tasksvc.config import Settings
from tasksvc.jobtypes import Registry
from tests.chaos.conftest import OwnRedis, job
from tests.processes import wait_for

pytestmark = pytest.mark.slow
RECONCILE_S = 0.5


@pytest.fixture
def client_on_own_redis(
    make_settings: Callable[..., Settings], job_types: Registry, own_redis: OwnRedis
) -> Iterator[TestClient]:
    settings = make_settings(redis_url=own_redis.url, reconcile_interval=RECONCILE_S)
    with TestClient(create_app(settings, registry=CollectorRegistry(), job_types=job_types)) as client:
        yield client


def all_succeeded(client: TestClient, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [job(client, i) for i in ids]
    return jobs if all(j["status"] == "succeeded" for j in jobs) else None


def test_redis_restarted_empty_loses_no_acknowledged_job(
    client_on_own_redis: TestClient,
    own_redis: OwnRedis,
    probe_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    client = client_on_own_redis
    waiting = [client.post("/v1/jobs", json={"type": "probe", "payload": {}}).json()["id"] for _ in range(10)]
    retrying = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "r", "failTimes": 1}}).json()["id"]
    own_redis.kill()  # every message, the due set and the slot count are gone
    own_redis.start()
    restarted_at = time.monotonic()
    probe_worker(processes=2, REDIS_URL=own_redis.url)

    jobs = wait_for(lambda: all_succeeded(client, [*waiting, retrying]), timeout_s=30, what="every job")
    assert time.monotonic() - restarted_at < 15  # RECONCILE_INTERVAL is 0.5 s; start-up dominates
    assert all(j["attempts"] == 1 for j in jobs[:-1])  # each ran once
    assert jobs[-1]["attempts"] == 2


def test_redis_restart_while_workers_run(
    client_on_own_redis: TestClient,
    own_redis: OwnRedis,
    probe_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    client = client_on_own_redis
    probe_worker(processes=2, REDIS_URL=own_redis.url)
    first = client.post("/v1/jobs", json={"type": "probe", "payload": {}}).json()["id"]
    wait_for(lambda: all_succeeded(client, [first]), what="a job before the restart")
    own_redis.kill()
    assert client.post("/v1/jobs", json={"type": "probe", "payload": {}}).status_code == 503  # nothing recorded
    own_redis.start()
    after = wait_for(
        lambda: (r := client.post("/v1/jobs", json={"type": "probe", "payload": {}})).status_code == 202 and r,
        what="the API to take jobs again",
    ).json()["id"]
    wait_for(lambda: all_succeeded(client, [after]), timeout_s=30, what="a job after the restart")
    listed = client.get("/v1/jobs?type=probe").json()["items"]
    assert len(listed) == 2  # the refused submit left no row


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_dropped_database_connections_are_survived(
    chaos_client: TestClient, probe_worker: Callable[..., subprocess.Popen[bytes]], database_url: str
) -> None:
    probe_worker(processes=2)
    before = [chaos_client.post("/v1/jobs", json={"type": "probe", "payload": {}}).json()["id"] for _ in range(3)]
    wait_for(lambda: all_succeeded(chaos_client, before), what="jobs before the drop")
    dbname = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
    assert dropped is not None
    assert dropped[0] > 0  # the workers' (and the API's) pooled connections are gone
    after = [chaos_client.post("/v1/jobs", json={"type": "probe", "payload": {}}).json()["id"] for _ in range(3)]
    wait_for(lambda: all_succeeded(chaos_client, after), timeout_s=30, what="jobs after the drop")
