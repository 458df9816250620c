"""Job lifecycle with real workers: retries, compensation, timeouts, cancel, long-poll (SQLite + PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasksvc import db, store
from tasksvc.blocklist import SqlBlockList
from tasksvc.clock import utcnow
from tasksvc.models import JobStatus
from tests.conftest import Workers, count_rows
from tests.testtypes import Probe


def submit(client: TestClient, job_type: str, payload: dict[str, Any], **extra: Any) -> str:
    resp = client.post("/v1/jobs", json={"type": job_type, "payload": payload, **extra})
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def get(client: TestClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return body


# --- retries ----------------------------------------------------------------------------------


def test_fail_times_retries_with_backoff_then_succeeds(client: TestClient, workers: Workers) -> None:
    job_id = submit(client, "hash", {"data": "abc", "failTimes": 2}, maxAttempts=5)
    workers.drain()
    job = get(client, job_id)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 3
    assert [e["attempt"] for e in job["errors"]] == [1, 2]
    assert {e["type"] for e in job["errors"]} == {"SimulatedFailure"}
    policy = workers.ctx.policy  # base 0.05 s, backoff 2, jitter 0.5
    for err in job["errors"]:
        delay = policy.base_delay_s * policy.backoff ** (err["attempt"] - 1)
        assert delay * (1 - policy.jitter_ratio) - 0.001 <= err["retryInSeconds"] <= delay + 0.001
        assert err["at"].endswith("Z")
    assert job["nextAttemptAt"] is None
    assert job["compensation"] is None


def test_retrying_job_shows_next_attempt_at(client: TestClient, workers: Workers, make_settings: Any) -> None:
    job_id = submit(client, "hash", {"data": "abc", "failTimes": 1})
    workers.ctx.policy = type(workers.ctx.policy)(base_delay_s=30, max_delay_s=60, jitter_ratio=0)
    workers.ctx.mq.promote_due()
    workers.run_once()
    job = get(client, job_id)
    assert job["status"] == "retrying"
    assert job["nextAttemptAt"] is not None
    assert job["errors"][0]["retryInSeconds"] == 30
    assert workers.mq.is_scheduled(job_id, 2)


def test_hash_retry_fail_compensate_is_skipped(client: TestClient, workers: Workers) -> None:
    job_id = submit(client, "hash", {"data": "abc", "fail": True}, maxAttempts=3)
    workers.drain()
    job = get(client, job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert [e["attempt"] for e in job["errors"]] == [1, 2, 3]
    assert job["errors"][-1]["retryInSeconds"] is None  # no retry after the last attempt
    assert all(e["retryInSeconds"] > 0 for e in job["errors"][:-1])
    assert job["compensation"]["status"] == "skipped"
    assert job["finishedAt"] is not None


def test_block_ip_retry_fail_compensate_removes_what_it_inserted(
    client: TestClient, workers: Workers, engine: Engine
) -> None:
    job_id = submit(client, "block_ip", {"ip": "192.0.2.50", "reason": "r", "fail": True}, maxAttempts=2)
    workers.drain()
    job = get(client, job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 2
    assert len(job["errors"]) == 2
    assert job["compensation"]["status"] == "succeeded"
    assert job["compensation"]["attempts"] == 1
    assert job["compensation"]["error"] is None
    assert job["compensation"]["finishedAt"] is not None
    assert count_rows(engine, "blocked_ips") == 0
    assert client.get("/v1/blocked-ips/192.0.2.50").status_code == 404


def test_block_ip_compensation_restores_the_previous_reason(client: TestClient, workers: Workers) -> None:
    submit(client, "block_ip", {"ip": "192.0.2.60", "reason": "old"})
    workers.drain()
    before = client.get("/v1/blocked-ips/192.0.2.60").json()
    job_id = submit(client, "block_ip", {"ip": "192.0.2.60", "reason": "new", "fail": True}, maxAttempts=2)
    workers.drain()
    assert get(client, job_id)["compensation"]["status"] == "succeeded"
    after = client.get("/v1/blocked-ips/192.0.2.60").json()
    assert after == before


def test_failed_unblock_is_compensated_by_putting_the_row_back(client: TestClient, workers: Workers) -> None:
    submit(client, "block_ip", {"ip": "2001:db8::/48", "reason": "keep me"})
    workers.drain()
    before = client.get("/v1/blocked-ips/2001:db8::/48").json()
    job_id = submit(client, "block_ip", {"ip": "2001:db8::/48", "action": "unblock", "fail": True}, maxAttempts=1)
    workers.drain()
    assert get(client, job_id)["status"] == "failed"
    assert client.get("/v1/blocked-ips/2001:db8::/48").json() == before


def test_compensation_is_idempotent(client: TestClient, workers: Workers, engine: Engine) -> None:
    job_id = submit(client, "block_ip", {"ip": "192.0.2.70", "fail": True}, maxAttempts=1)
    workers.drain()
    blocklist = SqlBlockList(engine)
    snapshot = client.get("/v1/blocked-ips").json()
    assert blocklist.restore(uuid.UUID(job_id)) is False  # a second run changes nothing
    assert client.get("/v1/blocked-ips").json() == snapshot


def test_compensation_runs_once_and_only_after_the_last_attempt(
    client: TestClient, workers: Workers, probe: Probe
) -> None:
    recovered = submit(client, "probe", {"fail_times": 2}, maxAttempts=3)
    failed = submit(client, "probe", {"fail_times": 99}, maxAttempts=4)
    workers.drain()
    assert get(client, recovered)["status"] == "succeeded"
    assert get(client, failed)["status"] == "failed"
    assert probe.compensations == [failed]
    assert len([r for r in probe.runs if r[0] == failed]) == 4


def test_compensation_that_fails_for_good_is_recorded_and_the_job_is_failed(
    client: TestClient, workers: Workers, probe: Probe
) -> None:
    job_id = submit(client, "probe", {"fail_times": 99, "compensation_fails": True}, maxAttempts=2)
    workers.drain()
    job = get(client, job_id)
    assert job["status"] == "failed"
    assert job["compensation"]["status"] == "failed"
    assert job["compensation"]["attempts"] == 2  # retried under the job's policy
    assert "compensation failure" in job["compensation"]["error"]
    assert probe.compensations == [job_id, job_id]
    text = workers.registry.get_sample_value("tasksvc_compensations_total", {"type": "probe", "outcome": "failed"})
    assert text == 1.0


def test_permanent_error_is_not_retried(client: TestClient, workers: Workers, probe: Probe) -> None:
    job_id = submit(client, "probe", {"permanent": True}, maxAttempts=5)
    workers.drain()
    job = get(client, job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert job["errors"][0]["type"] == "PermanentError"
    assert job["errors"][0]["retryInSeconds"] is None
    assert probe.compensations == [job_id]


# --- timeouts ---------------------------------------------------------------------------------


def test_timed_out_attempt_is_a_failed_attempt_and_the_worker_goes_on(
    client: TestClient, workers: Workers, probe: Probe
) -> None:
    slow = submit(client, "probe", {"sleep_s": 5}, maxAttempts=2)  # the probe type's timeout is 0.5 s
    after = submit(client, "hash", {"data": "next"})
    started = time.monotonic()
    workers.drain()
    assert time.monotonic() - started < 4  # two 0.5 s timeouts, not two 5 s sleeps
    job = get(client, slow)
    assert job["status"] == "failed"
    assert [e["type"] for e in job["errors"]] == ["Timeout", "Timeout"]
    assert get(client, after)["status"] == "succeeded"
    assert workers.registry.get_sample_value("tasksvc_job_attempts_total", {"type": "probe", "outcome": "timeout"}) == 2


# --- the state machine ------------------------------------------------------------------------


def test_stale_worker_cannot_move_a_job_backwards(client: TestClient, workers: Workers, engine: Engine) -> None:
    job_id = uuid.UUID(submit(client, "hash", {"data": "x"}))
    workers.drain()
    now = utcnow()
    with db.write(engine) as conn:
        assert store.claim(conn, job_id, now=now, lease_s=10) is None
        assert not store.schedule_retry(conn, job_id, attempt=1, errors=[], next_attempt_at=now, now=now)
        assert not store.succeed(conn, job_id, attempt=1, result={"x": 1}, now=now)
        assert not store.cancel(conn, job_id, scope="", now=now)
        job = store.get_job(conn, job_id)
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED
    assert job.result["digest"]


def test_duplicate_message_does_not_run_a_job_twice(client: TestClient, workers: Workers, probe: Probe) -> None:
    job_id = submit(client, "probe", {})
    workers.mq.send(job_id, 1)  # idempotent: same message id
    workers.mq.redis.rpush(workers.mq.queue.key, f"{job_id}-1")  # a true duplicate in the list
    workers.drain()
    assert probe.runs == [(job_id, 1)]
    assert get(client, job_id)["attempts"] == 1


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_queued_job_and_it_never_runs(client: TestClient, workers: Workers, probe: Probe) -> None:
    job_id = submit(client, "probe", {})
    resp = client.post(f"/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 200
    assert resp.json()["status"] == "cancelled"
    workers.drain()
    assert probe.runs == []
    job = get(client, job_id)
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0


def test_cancel_a_retrying_job_and_it_never_runs_again(client: TestClient, workers: Workers, probe: Probe) -> None:
    job_id = submit(client, "probe", {"fail_times": 1}, maxAttempts=3)
    workers.ctx.policy = type(workers.ctx.policy)(base_delay_s=0.3, max_delay_s=1, jitter_ratio=0)
    workers.run_once()
    assert get(client, job_id)["status"] == "retrying"
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    workers.drain()  # the scheduled retry comes due and is promoted: it must be a no-op
    assert probe.runs == [(job_id, 1)]
    assert get(client, job_id)["status"] == "cancelled"


def test_cancel_running_or_finished_is_409(client: TestClient, workers: Workers, engine: Engine) -> None:
    running = submit(client, "hash", {"data": "r"})
    with db.write(engine) as conn:
        assert store.claim(conn, uuid.UUID(running), now=utcnow(), lease_s=30) is not None
    resp = client.post(f"/v1/jobs/{running}/cancel")
    assert resp.status_code == 409
    assert resp.json()["type"].endswith("/conflict")
    done = submit(client, "hash", {"data": "d"})
    workers.drain()
    assert client.post(f"/v1/jobs/{done}/cancel").status_code == 409


@pytest.mark.parametrize("rounds", [25])
def test_cancel_racing_a_worker_claim_has_one_winner(client: TestClient, engine: Engine, rounds: int) -> None:
    for _ in range(rounds):
        job_id = uuid.UUID(submit(client, "hash", {"data": "race"}))
        results: dict[str, Any] = {}
        barrier = threading.Barrier(2)

        def claim(job_id: uuid.UUID = job_id, results: dict[str, Any] = results, barrier: Any = barrier) -> None:
            barrier.wait()
            with db.write(engine) as conn:
                results["claim"] = store.claim(conn, job_id, now=utcnow(), lease_s=30) is not None

        def cancel(job_id: uuid.UUID = job_id, results: dict[str, Any] = results, barrier: Any = barrier) -> None:
            barrier.wait()
            with db.write(engine) as conn:
                results["cancel"] = store.cancel(conn, job_id, scope="", now=utcnow())

        threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results["claim"] != results["cancel"], results  # exactly one wins
        status = get(client, str(job_id))["status"]
        assert status == ("running" if results["claim"] else "cancelled")


# --- long-poll --------------------------------------------------------------------------------


def test_wait_returns_as_soon_as_the_job_finishes(client: TestClient, workers: Workers) -> None:
    job_id = submit(client, "hash", {"data": "w"})
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["job"] = client.get(f"/v1/jobs/{job_id}?wait=20").json()
        answer["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll)
    poller.start()
    workers.drain()  # RQ's worker wants the main thread (signals), so the client waits in a thread
    finished = time.monotonic()
    poller.join(timeout=30)
    assert answer["job"]["status"] == "succeeded"
    assert answer["at"] - finished < 5  # woken by the completion, not by the 20 s timeout


def test_wait_times_out_with_the_current_state(client: TestClient) -> None:
    job_id = submit(client, "hash", {"data": "w"})
    started = time.monotonic()
    job = client.get(f"/v1/jobs/{job_id}?wait=0.5").json()
    assert job["status"] == "queued"
    assert 0.5 <= time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["31", "-1", "soon"])
def test_wait_out_of_range_is_422(client: TestClient, wait: str) -> None:
    job_id = submit(client, "hash", {"data": "w"})
    resp = client.get(f"/v1/jobs/{job_id}?wait={wait}")
    assert resp.status_code == 422
    assert resp.json()["type"].endswith("/validation")


def test_a_job_type_the_worker_does_not_know_fails_for_good(
    client: TestClient, settings: Any, probe: Probe, redis: Any
) -> None:
    from prometheus_client import CollectorRegistry

    from tasksvc.metrics import Metrics
    from tasksvc.worker import build_context

    job_id = submit(client, "probe", {}, maxAttempts=5)  # the API knows `probe`...
    ctx = build_context(settings, Metrics(CollectorRegistry()))  # ...this worker does not
    Workers(ctx, CollectorRegistry()).drain()
    job = get(client, job_id)
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # no retry: another attempt cannot help
    assert job["errors"][0]["type"] == "UnknownJobType"
    assert job["compensation"]["status"] == "failed"  # it may have had something to undo: not "skipped"
    assert "probe" in job["compensation"]["error"]
    assert probe.runs == []
    assert probe.compensations == []
    ctx.engine.dispose()
