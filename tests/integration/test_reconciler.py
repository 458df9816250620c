"""The reconciler: lost messages and lost workers, on both databases with a real Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasksvc import db, store
from tasksvc.clock import utcnow
from tasksvc.queue import message_id
from tasksvc.reconciler import BATCH, reconcile
from tasksvc.runner import fail_attempt
from tests.conftest import Workers


def _taken_by(workers: Workers, job_id: str, worker_name: str) -> None:
    """What RQ does when a worker dequeues a message: off the list, marked started by that worker."""
    redis, msg = workers.mq.redis, message_id(job_id, 1)
    assert redis.lrem(workers.mq.queue.key, 0, msg) == 1
    redis.hset(f"rq:job:{msg}", mapping={"status": "started", "worker_name": worker_name})


def test_a_message_taken_by_a_worker_that_died_is_sent_again(client: TestClient, workers: Workers) -> None:
    job_id = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "x"}}).json()["id"]
    _taken_by(workers, job_id, "ghost")  # SIGKILLed between RQ's dequeue and our claim
    assert reconcile(workers.ctx, grace_s=0)["resent"] == 1
    workers.drain()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_a_message_a_live_worker_is_running_is_left_alone(client: TestClient, workers: Workers) -> None:
    job_id = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "x"}}).json()["id"]
    _taken_by(workers, job_id, "alive")
    workers.mq.redis.sadd("rq:workers", "rq:worker:alive")
    assert reconcile(workers.ctx, grace_s=0)["resent"] == 0


def test_every_waiting_job_is_resent_however_many_there_are(workers: Workers, engine: Engine) -> None:
    count = BATCH + 200
    now = utcnow() - timedelta(seconds=60)
    with db.write(engine) as conn:
        for i in range(count):
            store.insert_job(
                conn,
                job_id=uuid.uuid4(),
                scope="",
                job_type="hash",
                payload={"data": str(i)},
                max_attempts=3,
                idempotency_key=None,
                now=now,
            )
    # Redis restarted empty: no message for any of them.
    assert reconcile(workers.ctx, grace_s=1)["resent"] == count
    assert workers.mq.redis.llen(workers.mq.queue.key) == count
    assert reconcile(workers.ctx, grace_s=1)["resent"] == 0  # and not twice
    assert workers.ctx.bound.depth() == count  # the slot count follows the database


def _lost_attempt(client: TestClient, engine: Engine) -> uuid.UUID:
    job_id = uuid.UUID(client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "x"}}).json()["id"])
    with db.write(engine) as conn:  # claimed by a worker whose lease ran out a second ago
        assert store.claim(conn, job_id, now=utcnow() - timedelta(seconds=11), lease_s=10) is not None
    return job_id


def test_a_lost_attempt_is_counted_once_when_reconcilers_race(
    client: TestClient, workers: Workers, engine: Engine
) -> None:
    job_id = _lost_attempt(client, engine)
    now = utcnow()
    with db.read(engine) as conn:
        stale = store.expired_leases(conn, now=now, limit=10)  # reconciler B reads...
    assert reconcile(workers.ctx, grace_s=60)["lost"] == 1  # ...reconciler A does the work first
    (record,) = stale
    assert fail_attempt(workers.ctx, record, "WorkerLost", "late", lost_by=now) is False
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert [e["type"] for e in job["errors"]] == ["WorkerLost"]
    sample = workers.registry.get_sample_value("tasksvc_job_attempts_total", {"type": "hash", "outcome": "worker_lost"})
    assert sample == 1


def test_a_lease_renewed_after_the_reconciler_looked_is_not_declared_lost(
    client: TestClient, workers: Workers, engine: Engine
) -> None:
    job_id = _lost_attempt(client, engine)
    now = utcnow()
    with db.read(engine) as conn:
        (record,) = store.expired_leases(conn, now=now, limit=10)
    with db.write(engine) as conn:  # the worker was only slow: its heartbeat lands now
        assert store.renew_lease(conn, job_id, attempt=1, compensation=False, until=now + timedelta(seconds=30))
    assert fail_attempt(workers.ctx, record, "WorkerLost", "late", lost_by=now) is False
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
