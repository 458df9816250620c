"""Idempotency keys (SPEC section 6): replay, mismatch, in-use, DB-enforced uniqueness, scope, TTL."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from tasksvc.admission import KeyLocks
from tasksvc.clock import utcnow
from tasksvc.config import Settings
from tasksvc.db import make_engine
from tasksvc.metrics import Metrics
from tasksvc.queue import MessageQueue, connect
from tasksvc.reconciler import reconcile
from tasksvc.service import JobService, Submission
from tests.conftest import Workers, count_rows
from tests.processes import start_api

HASH = {"type": "hash", "payload": {"data": "abc", "algo": "sha256"}}


def test_same_key_same_request_replays_the_job(client: TestClient, workers: Workers) -> None:
    first = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "order-42"})
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "order-42"})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotencyKey"] == "order-42"
    workers.drain()
    later = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "order-42"})
    assert later.status_code == 200
    assert later.json()["status"] == "succeeded"  # the job as it is now, whatever its status
    assert workers.registry is not None


def test_payload_key_order_does_not_matter_and_header_key_works(client: TestClient, engine: Engine) -> None:
    first = client.post(
        "/v1/jobs", json={"type": "hash", "payload": {"data": "x", "algo": "md5"}}, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 202
    again = client.post(
        "/v1/jobs", json={"type": "hash", "payload": {"algo": "md5", "data": "x"}, "idempotencyKey": "k1"}
    )
    assert again.status_code == 200
    both = client.post(
        "/v1/jobs",
        json={"type": "hash", "payload": {"data": "x", "algo": "md5"}, "idempotencyKey": "k1"},
        headers={"Idempotency-Key": "k1"},
    )
    assert both.status_code == 200
    assert count_rows(engine, "jobs") == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"type": "hash", "payload": {"data": "other"}},  # another payload
        {**HASH, "maxAttempts": 2},  # another maxAttempts
        {"type": "block_ip", "payload": {"ip": "192.0.2.1"}},  # another type
    ],
)
def test_same_key_different_request_is_422_mismatch(
    client: TestClient, engine: Engine, changed: dict[str, Any]
) -> None:
    assert client.post("/v1/jobs", json={**HASH, "idempotencyKey": "k"}).status_code == 202
    resp = client.post("/v1/jobs", json={**changed, "idempotencyKey": "k"})
    assert resp.status_code == 422
    assert resp.json()["type"].endswith("/idempotency-key-mismatch")
    assert count_rows(engine, "jobs") == 1


def test_key_still_being_recorded_is_409(client: TestClient, redis: Any, engine: Engine) -> None:
    locks = KeyLocks(redis)
    token = locks.acquire("", "busy")  # another request is recording this key right now
    assert token is not None
    resp = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "busy"})
    assert resp.status_code == 409
    assert resp.json()["type"].endswith("/idempotency-key-in-use")
    assert count_rows(engine, "jobs") == 0
    locks.release("", "busy", token)
    assert client.post("/v1/jobs", json={**HASH, "idempotencyKey": "busy"}).status_code == 202


def test_keys_are_scoped(settings: Settings, engine: Engine) -> None:
    service = JobService(
        settings,
        engine,
        MessageQueue(connect(settings.redis_url.get_secret_value())),  # type: ignore[union-attr]
        __import__("tasksvc.jobtypes", fromlist=["default_registry"]).default_registry(),
        Metrics(CollectorRegistry()),
    )
    sub = Submission("hash", {"data": "a"}, idempotency_key="shared")
    a = service.submit(sub, scope="alice")
    b = service.submit(sub, scope="bob")
    assert a.job.id != b.job.id
    assert service.submit(sub, scope="alice").job.id == a.job.id
    service.mq.redis.close()


def test_expired_key_may_create_a_new_job_and_is_pruned(client: TestClient, engine: Engine, workers: Workers) -> None:
    first = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "ttl"}).json()
    with engine.begin() as conn:  # IDEMPOTENCY_TTL has passed
        conn.execute(text("UPDATE idempotency_keys SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    second = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "ttl"})
    assert second.status_code == 202
    assert second.json()["id"] != first["id"]
    assert client.get(f"/v1/jobs/{first['id']}").json()["idempotencyKey"] == "ttl"  # the old job keeps it
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    assert reconcile(workers.ctx, grace_s=60)["keys_pruned"] == 1
    assert count_rows(engine, "idempotency_keys") == 0


def test_replays_are_counted(client: TestClient) -> None:
    client.post("/v1/jobs", json={**HASH, "idempotencyKey": "m"})
    client.post("/v1/jobs", json={**HASH, "idempotencyKey": "m"})
    client.post("/v1/jobs", json={**HASH, "idempotencyKey": "m"})
    metrics = client.get("/metrics").text
    assert 'tasksvc_jobs_deduplicated_total{type="hash"} 2.0' in metrics
    assert 'tasksvc_jobs_submitted_total{type="hash"} 1.0' in metrics


@pytest.mark.slow
def test_concurrent_submissions_with_one_key_create_exactly_one_job(
    started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str], database_url: str
) -> None:
    base = start_api(started, env)
    barrier = threading.Barrier(50)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            answers.append(c.post(f"{base}/v1/jobs", json={**HASH, "idempotencyKey": "race"}))

    threads = [threading.Thread(target=post) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    codes = sorted(r.status_code for r in answers)
    assert len(codes) == 50
    assert codes.count(202) == 1, codes
    assert set(codes) <= {200, 202, 409}, codes
    assert len({r.json()["id"] for r in answers if r.status_code in (200, 202)}) == 1
    engine = make_engine(Settings(_env_file=None, database_url=database_url).sqlalchemy_url)  # type: ignore[call-arg]
    try:
        assert count_rows(engine, "jobs") == 1
        assert count_rows(engine, "idempotency_keys") == 1
    finally:
        engine.dispose()


def test_a_default_sent_or_left_out_is_the_same_request(client: TestClient, engine: Engine) -> None:
    first = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "a"}, "idempotencyKey": "d"})
    assert first.status_code == 202
    explicit = {"type": "hash", "payload": {"data": "a", "algo": "sha256", "encoding": "utf-8"}, "maxAttempts": 5}
    again = client.post("/v1/jobs", json={**explicit, "idempotencyKey": "d"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert count_rows(engine, "jobs") == 1
