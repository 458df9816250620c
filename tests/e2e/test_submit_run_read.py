"""HTTP -> a real worker -> HTTP, on SQLite and PostgreSQL, with a real Redis."""

from __future__ import annotations

import json
import re
import zlib

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import Workers, count_rows

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_job_is_accepted_run_and_read_back(client: TestClient, workers: Workers) -> None:
    resp = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "abc", "algo": "sha256"}})
    assert resp.status_code == 202
    job = resp.json()
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["jobId"] == job["id"]
    assert job["status"] == "queued"
    assert job["attempts"] == 0

    workers.drain()

    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    assert done["result"] == {"algo": "sha256", "digest": ABC_SHA256}
    assert done["attempts"] == 1
    assert done["errors"] == []
    for field in ("createdAt", "updatedAt", "startedAt", "finishedAt"):
        assert RFC3339_Z.match(done[field]), (field, done[field])
    assert done["nextAttemptAt"] is None


def test_block_ip_job_writes_a_row_the_api_returns(client: TestClient, workers: Workers) -> None:
    resp = client.post("/v1/jobs", json={"type": "block_ip", "payload": {"ip": "203.0.113.7/32", "reason": "abuse"}})
    assert resp.status_code == 202
    assert resp.json()["payload"]["ip"] == "203.0.113.7"  # stored normalised
    assert client.get("/v1/blocked-ips/203.0.113.7").status_code == 404

    workers.drain()

    assert client.get(f"/v1/jobs/{resp.json()['id']}").json()["status"] == "succeeded"
    row = client.get("/v1/blocked-ips/203.0.113.7")
    assert row.status_code == 200
    assert row.json()["ip"] == "203.0.113.7"
    assert row.json()["reason"] == "abuse"
    assert row.json()["jobId"] == resp.json()["id"]
    assert client.get("/v1/blocked-ips/203.0.113.7%2F32").json()["ip"] == "203.0.113.7"
    listing = client.get("/v1/blocked-ips").json()
    assert [e["ip"] for e in listing["items"]] == ["203.0.113.7"]


def test_unblock_removes_the_row(client: TestClient, workers: Workers, engine: Engine) -> None:
    client.post("/v1/jobs", json={"type": "block_ip", "payload": {"ip": "198.51.100.0/24"}})
    workers.drain()
    assert count_rows(engine, "blocked_ips") == 1
    client.post("/v1/jobs", json={"type": "block_ip", "payload": {"ip": "198.51.100.0/24", "action": "unblock"}})
    workers.drain()
    assert count_rows(engine, "blocked_ips") == 0


def test_list_is_newest_first_and_pages_with_a_cursor(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", json={"type": "hash", "payload": {"data": str(i)}}).json()["id"] for i in range(5)]
    first = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = client.get(f"/v1/jobs?limit=2&cursor={first['nextCursor']}").json()
    assert [j["id"] for j in second["items"]] == ids[::-1][2:4]
    last = client.get(f"/v1/jobs?limit=2&cursor={second['nextCursor']}").json()
    assert [j["id"] for j in last["items"]] == ids[::-1][4:]
    assert last["nextCursor"] is None


def test_list_is_stable_under_concurrent_inserts(client: TestClient) -> None:
    old = [client.post("/v1/jobs", json={"type": "hash", "payload": {"data": str(i)}}).json()["id"] for i in range(4)]
    page1 = client.get("/v1/jobs?limit=2").json()
    client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "new"}})  # lands before page 2 is read
    page2 = client.get(f"/v1/jobs?limit=2&cursor={page1['nextCursor']}").json()
    seen = [j["id"] for j in page1["items"] + page2["items"]]
    assert seen == old[::-1]


def test_list_filters_by_status_and_type(client: TestClient, workers: Workers) -> None:
    client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "x"}})
    workers.drain()
    client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "y"}})
    client.post("/v1/jobs", json={"type": "block_ip", "payload": {"ip": "192.0.2.1"}})
    queued = client.get("/v1/jobs?status=queued").json()["items"]
    assert {j["type"] for j in queued} == {"hash", "block_ip"}
    assert [j["status"] for j in client.get("/v1/jobs?status=succeeded").json()["items"]] == ["succeeded"]
    assert [j["type"] for j in client.get("/v1/jobs?type=block_ip").json()["items"]] == ["block_ip"]
    assert client.get("/v1/jobs?type=hash&status=queued").json()["items"][0]["payload"] == {"data": "y"}


def test_job_types_publish_their_payload_schema(client: TestClient) -> None:
    types = {t["name"]: t for t in client.get("/v1/job-types").json()["items"]}
    assert {"hash", "block_ip"} <= set(types)
    assert "data" in types["hash"]["payloadSchema"]["properties"]
    assert "sha256" in types["hash"]["payloadSchema"]["properties"]["algo"]["enum"]
    assert types["block_ip"]["compensates"] is True
    assert types["hash"]["compensates"] is False


def test_health_readiness_docs_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "redis": True}
    assert client.get("/openapi.json").json()["paths"]["/v1/jobs"]
    assert client.get("/docs").status_code == 200
    client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "m"}})
    metrics = client.get("/metrics").text
    assert 'tasksvc_jobs_submitted_total{type="hash"} 1.0' in metrics
    assert 'handler="/v1/jobs/{job_id}"' not in metrics or "/v1/jobs/0" not in metrics


def test_message_carries_only_the_job_id_as_json(client: TestClient, workers: Workers) -> None:
    job_id = client.post("/v1/jobs", json={"type": "hash", "payload": {"data": "secret-ish"}}).json()["id"]
    redis = workers.mq.redis
    (msg_id,) = [m.decode() for m in redis.lrange(workers.mq.queue.key, 0, -1)]
    assert msg_id == f"{job_id}-1"
    data = redis.hget(f"rq:job:{msg_id}", "data")
    assert data is not None
    assert json.loads(zlib.decompress(data)) == ["tasksvc.runner.run_message", None, [job_id], {}]
