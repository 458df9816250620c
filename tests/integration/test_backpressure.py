"""The bounded queue (SPEC section 7) and submits with a backend down (SPEC section 9)."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from redis import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import Engine

from tasksvc import db, store
from tasksvc.admission import DRAINED_PREFIX, NO_DRAIN_RETRY_AFTER_S, QueueBound
from tasksvc.api.app import create_app
from tasksvc.clock import utcnow
from tasksvc.config import Settings
from tasksvc.db import make_engine
from tasksvc.jobtypes import default_registry
from tasksvc.metrics import Metrics
from tasksvc.queue import MessageQueue
from tasksvc.service import JobService, Submission
from tasksvc.worker import build_context
from tests.conftest import Workers, count_rows
from tests.processes import free_port, start_api

HASH = {"type": "hash", "payload": {"data": "abc"}}


@pytest.fixture
def small_client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    app = create_app(make_settings(queue_max_size=2), registry=CollectorRegistry())
    with TestClient(app) as c:
        yield c


def test_full_queue_answers_503_with_retry_after_and_records_nothing(
    small_client: TestClient, engine: Engine, redis: Redis
) -> None:
    assert small_client.post("/v1/jobs", json=HASH).status_code == 202
    assert small_client.post("/v1/jobs", json=HASH).status_code == 202
    resp = small_client.post("/v1/jobs", json=HASH)
    assert resp.status_code == 503
    assert resp.json()["type"].endswith("/queue-full")
    assert int(resp.headers["Retry-After"]) >= 1
    assert count_rows(engine, "jobs") == 2
    assert redis.llen("rq:queue:tasksvc") == 2
    assert 'tasksvc_jobs_rejected_total{reason="queue_full"} 1.0' in small_client.get("/metrics").text
    assert "tasksvc_queue_depth 2.0" in small_client.get("/metrics").text


def test_replay_is_answered_even_when_full(small_client: TestClient) -> None:
    first = small_client.post("/v1/jobs", json={**HASH, "idempotencyKey": "a"})
    small_client.post("/v1/jobs", json=HASH)
    assert small_client.post("/v1/jobs", json=HASH).status_code == 503
    again = small_client.post("/v1/jobs", json={**HASH, "idempotencyKey": "a"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_slots_free_as_workers_claim_and_retries_are_never_dropped(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(queue_max_size=1)
    workers = Workers(build_context(settings, Metrics(CollectorRegistry())), CollectorRegistry())
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        failing = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "f", "failTimes": 1}}).json()
        assert client.post("/v1/jobs", json=HASH).status_code == 503
        workers.run_once()  # attempt 1 fails: the job waits for its retry, and still holds a slot
        assert client.get(f"/v1/jobs/{failing['id']}").json()["status"] == "retrying"
        assert client.post("/v1/jobs", json=HASH).status_code == 503
        workers.drain()  # the retry runs although the queue was at its bound
        assert client.get(f"/v1/jobs/{failing['id']}").json()["status"] == "succeeded"
        assert client.post("/v1/jobs", json=HASH).status_code == 202
    workers.ctx.engine.dispose()


def test_retry_after_follows_the_drain_rate(redis: Redis) -> None:
    bound = QueueBound(redis, 10)
    now = 1_000_000.0
    assert bound.retry_after_s(now) == NO_DRAIN_RETRY_AFTER_S  # nothing drained lately
    for second in range(1, 11):
        redis.set(DRAINED_PREFIX + str(int(now) - second), 1)  # 1 job/s
    assert bound.retry_after_s(now) == 1
    for second in range(1, 11):
        redis.delete(DRAINED_PREFIX + str(int(now) - second))
    redis.set(DRAINED_PREFIX + str(int(now) - 3), 2)  # 0.2 job/s
    assert bound.retry_after_s(now) == 5


def test_redis_down_at_submit_is_503_and_records_nothing(
    make_settings: Callable[..., Settings], engine: Engine
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        resp = client.post("/v1/jobs", json=HASH)
        assert resp.status_code == 503
        assert resp.json()["type"].endswith("/backend-unavailable")
        assert int(resp.headers["Retry-After"]) >= 1
        assert client.get("/readyz").status_code == 503
    assert count_rows(engine, "jobs") == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_down_at_submit_is_503_and_sends_nothing(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        resp = client.post("/v1/jobs", json=HASH)
        assert resp.status_code == 503
        assert resp.json()["type"].endswith("/backend-unavailable")
        assert client.get("/readyz").json()["checks"] == {"database": False, "redis": True}
    assert redis.llen("rq:queue:tasksvc") == 0
    assert QueueBound(redis, 10).depth() == 0  # the slot it took was given back


def test_failed_send_after_commit_deletes_the_row(client: TestClient, redis: Redis, engine: Engine) -> None:
    redis.set("rq:queue:tasksvc", "not a list")  # every push to the queue now fails (WRONGTYPE)
    resp = client.post("/v1/jobs", json={**HASH, "idempotencyKey": "x"})
    assert resp.status_code == 503
    assert resp.json()["type"].endswith("/backend-unavailable")
    assert count_rows(engine, "jobs") == 0
    assert count_rows(engine, "idempotency_keys") == 0
    assert QueueBound(redis, 10).depth() == 0


@pytest.mark.slow
def test_bound_holds_under_concurrency(
    started: Callable[..., subprocess.Popen[bytes]], env: dict[str, str], database_url: str
) -> None:
    base = start_api(started, env, QUEUE_MAX_SIZE="50")  # and no workers
    codes: list[int] = []
    lock = threading.Lock()
    per_thread = [200 // 32 + (1 if i < 200 % 32 else 0) for i in range(32)]

    def submit(n: int) -> None:
        with httpx.Client(timeout=30) as c:
            for _ in range(n):
                r = c.post(f"{base}/v1/jobs", json=HASH)
                with lock:
                    codes.append(r.status_code)

    threads = [threading.Thread(target=submit, args=(n,)) for n in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(codes) == 200
    assert codes.count(202) == 50
    assert codes.count(503) == 150
    engine = make_engine(Settings(_env_file=None, database_url=database_url).sqlalchemy_url)  # type: ignore[call-arg]
    try:
        assert count_rows(engine, "jobs") == 50
    finally:
        engine.dispose()


class _ReplyLost(MessageQueue):
    """The real queue, but the send's reply is lost after a worker took the message (fault injection)."""

    def __init__(self, redis: Redis, engine: Engine) -> None:
        super().__init__(redis)
        object.__setattr__(self, "engine", engine)

    def send(self, job_id: str, attempt: int, compensation: bool = False, at_front: bool = False) -> None:
        super().send(job_id, attempt, compensation, at_front)
        with db.write(self.engine) as conn:  # type: ignore[attr-defined]
            assert store.claim(conn, uuid.UUID(job_id), now=utcnow(), lease_s=30) is not None
        raise RedisTimeoutError("reply lost")


def test_a_send_that_only_lost_its_reply_is_a_recorded_job(settings: Settings, engine: Engine, redis: Redis) -> None:
    service = JobService(settings, engine, _ReplyLost(redis, engine), default_registry(), Metrics(CollectorRegistry()))
    done = service.submit(Submission("hash", {"data": "a"}, idempotency_key="order-1"))
    assert done.replayed is False  # 202: a worker has it, so it is not "nothing recorded"
    assert count_rows(engine, "jobs") == 1
    assert count_rows(engine, "idempotency_keys") == 1  # so a retry with the key replays, never duplicates
    again = service.submit(Submission("hash", {"data": "a"}, idempotency_key="order-1"))
    assert again.replayed is True
    assert again.job.id == done.job.id
