"""Bad input: a clear 4xx in problem+json, never a 500, and nothing recorded."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import Engine

from tests.conftest import count_rows

PROBLEM = "application/problem+json"


def assert_problem(resp: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["type"].rsplit("/", 1)[-1] == kind
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in resp.text
    return body


@pytest.fixture
def nothing_recorded(engine: Engine, redis: Redis) -> Iterator[None]:
    yield
    assert count_rows(engine, "jobs") == 0
    assert count_rows(engine, "idempotency_keys") == 0
    assert redis.llen("rq:queue:tasksvc") == 0


BAD_BODIES = [
    # (what it shows, body)
    ("unknown type", {"type": "nope", "payload": {}}),
    ("payload not an object", {"type": "hash", "payload": ["abc"]}),
    ("payload a string", {"type": "hash", "payload": "abc"}),
    ("missing payload", {"type": "hash"}),
    ("missing type", {"payload": {"data": "abc"}}),
    ("missing required payload field", {"type": "hash", "payload": {}}),
    ("wrong-typed payload field", {"type": "hash", "payload": {"data": 42}}),
    ("unknown algo", {"type": "hash", "payload": {"data": "abc", "algo": "md6"}}),
    ("unknown payload field", {"type": "hash", "payload": {"data": "abc", "colour": "red"}}),
    ("bad base64", {"type": "hash", "payload": {"data": "!!!", "encoding": "base64"}}),
    ("mass assignment: status", {"type": "hash", "payload": {"data": "a"}, "status": "succeeded"}),
    ("mass assignment: attempts", {"type": "hash", "payload": {"data": "a"}, "attempts": 3}),
    ("mass assignment: id", {"type": "hash", "payload": {"data": "a"}, "id": "0193a3c6-0000-7000-8000-000000000000"}),
    ("maxAttempts 0", {"type": "hash", "payload": {"data": "a"}, "maxAttempts": 0}),
    ("maxAttempts over the limit", {"type": "hash", "payload": {"data": "a"}, "maxAttempts": 21}),
    ("maxAttempts not an int", {"type": "hash", "payload": {"data": "a"}, "maxAttempts": "3"}),
    ("key too long", {"type": "hash", "payload": {"data": "a"}, "idempotencyKey": "k" * 256}),
    ("key with a control character", {"type": "hash", "payload": {"data": "a"}, "idempotencyKey": "a\nb"}),
    ("ip with host bits", {"type": "block_ip", "payload": {"ip": "10.0.0.1/8"}}),
    ("block everything v4", {"type": "block_ip", "payload": {"ip": "0.0.0.0/0"}}),
    ("block everything v6", {"type": "block_ip", "payload": {"ip": "::/0"}}),
    ("not an ip", {"type": "block_ip", "payload": {"ip": "example.com"}}),
    ("unknown action", {"type": "block_ip", "payload": {"ip": "192.0.2.1", "action": "ban"}}),
    ("payload nested too deep", {}),  # built in the test: 40 levels
    # raw JSON text below: a client library would refuse to encode these itself
    ("payload nested 400 deep", b'{"type":"hash","payload":{"data":"a","x":' + b"[" * 400 + b"]" * 400 + b"}}"),
    ("key with a lone surrogate", b'{"type":"hash","payload":{"data":"a"},"idempotencyKey":"\\ud800"}'),
    ("key with a C1 control character", {"type": "hash", "payload": {"data": "a"}, "idempotencyKey": "a\x85b"}),
    ("lone surrogate in a payload string", b'{"type":"block_ip","payload":{"ip":"192.0.2.1","reason":"\\ud800"}}'),
    ("NUL in a payload string", {"type": "block_ip", "payload": {"ip": "192.0.2.1", "reason": "a\x00b"}}),
    ("NUL in a payload key", {"type": "hash", "payload": {"data": "a", "k\x00": 1}}),
]


def _nest(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
@pytest.mark.usefixtures("nothing_recorded")
def test_bad_submission_is_422_and_records_nothing(client: TestClient, case: str, body: dict[str, Any] | bytes) -> None:
    if case == "payload nested too deep":
        body = {"type": "hash", "payload": {"data": "a", "x": _nest(40)}}
    if isinstance(body, bytes):
        resp = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    else:
        resp = client.post("/v1/jobs", json=body)
    problem = assert_problem(resp, 422, "validation")
    assert problem["errors"], case


@pytest.mark.usefixtures("nothing_recorded")
def test_invalid_json_is_400(client: TestClient) -> None:
    resp = client.post(
        "/v1/jobs", content=b'{"type": "hash", "payload": {', headers={"content-type": "application/json"}
    )
    assert_problem(resp, 400, "bad-request")


@pytest.mark.usefixtures("nothing_recorded")
def test_body_over_the_limit_with_content_length_is_413(client: TestClient, settings: Any) -> None:
    big = b'{"type": "hash", "payload": {"data": "' + b"a" * settings.max_body_bytes + b'"}}'
    assert_problem(
        client.post("/v1/jobs", content=big, headers={"content-type": "application/json"}), 413, "payload-too-large"
    )


@pytest.mark.usefixtures("nothing_recorded")
def test_body_over_the_limit_without_content_length_is_413(client: TestClient, settings: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "hash", "payload": {"data": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"a" * 65536
        yield b'"}}'

    resp = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_problem(resp, 413, "payload-too-large")


@pytest.mark.usefixtures("nothing_recorded")
def test_header_and_body_keys_that_differ_are_400(client: TestClient) -> None:
    resp = client.post(
        "/v1/jobs",
        json={"type": "hash", "payload": {"data": "a"}, "idempotencyKey": "one"},
        headers={"Idempotency-Key": "two"},
    )
    assert_problem(resp, 400, "bad-request")


@pytest.mark.parametrize("job_id", ["01a2420f-0fbe-76d7-980d-79716d1e8565", "not-a-uuid", "1234", "%00"])
def test_unknown_or_malformed_job_id_is_404(client: TestClient, job_id: str) -> None:
    assert_problem(client.get(f"/v1/jobs/{job_id}"), 404, "not-found")
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 404, "not-found")


@pytest.mark.parametrize("cursor", ["garbage!", "AAAA", "bm90LWEtdXVpZA"])
def test_invalid_cursor_is_400(client: TestClient, cursor: str) -> None:
    assert_problem(client.get(f"/v1/jobs?cursor={cursor}"), 400, "bad-request")


@pytest.mark.parametrize(
    "decoded",
    [
        "2020-01-01T00:00:00+00:00|\x00",  # NUL in the address
        "2020-01-01T00:00:00+00:00|not-an-ip",
        "2020-01-01T00:00:00+00:00|1.2.3.4/32",  # not the stored spelling
        "0001-01-01T00:00:00+14:00|1.2.3.4",  # out of range once in UTC
        "9999-12-31T23:59:59-14:00|1.2.3.4",
        "2020-01-01T00:00:00|1.2.3.4",  # no zone
        "no separator",
    ],
)
def test_invalid_blocked_ip_cursor_is_400(client: TestClient, decoded: str) -> None:
    cursor = base64.urlsafe_b64encode(decoded.encode()).decode().rstrip("=")
    assert_problem(client.get(f"/v1/blocked-ips?cursor={cursor}"), 400, "bad-request")


@pytest.mark.parametrize("query", ["limit=201", "limit=0", "limit=x", "status=bogus", "type=%00", "type=a%20b"])
def test_bad_list_parameters_are_422(client: TestClient, query: str) -> None:
    assert_problem(client.get(f"/v1/jobs?{query}"), 422, "validation")


def test_unknown_blocked_ip_and_unknown_route_are_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/blocked-ips/192.0.2.99"), 404, "not-found")
    assert_problem(client.get("/v1/blocked-ips/not-an-ip"), 404, "not-found")
    assert_problem(client.get("/v1/nothing-here"), 404, "not-found")
