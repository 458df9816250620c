"""API keys (SPEC section 10): every /v1 call needs a key; a key never sees another key's jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from tasksvc.api.app import create_app
from tasksvc.auth import parse_api_keys, scope_of
from tasksvc.config import Settings
from tasksvc.errors import ConfigError
from tests.conftest import Workers

ALICE = {"Authorization": "Bearer alice-secret-1"}
BOB = {"Authorization": "Bearer bob-secret-22"}
ANON = {"Authorization": "Bearer anonymous-key-333"}
HASH = {"type": "hash", "payload": {"data": "abc"}}


@pytest.fixture
def keyed(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(api_keys="alice:alice-secret-1,bob:bob-secret-22,anonymous-key-333")
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no key
        {"Authorization": "Bearer wrong-secret-0"},  # unknown key
        {"Authorization": "alice-secret-1"},  # not a bearer token
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},  # another scheme
        {"Authorization": "Bearer "},  # empty
    ],
)
def test_v1_needs_a_valid_key(keyed: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/job-types"),
        ("GET", "/v1/blocked-ips"),
    ]:
        resp = keyed.request(method, path, json=HASH if method == "POST" else None, headers=headers)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["type"].endswith("/unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_operations_endpoints_stay_open(keyed: TestClient) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    assert keyed.get("/metrics").status_code == 200


def test_a_key_never_sees_another_keys_jobs(keyed: TestClient, workers: Workers) -> None:
    mine = keyed.post("/v1/jobs", json=HASH, headers=ALICE).json()["id"]
    theirs = keyed.post("/v1/jobs", json=HASH, headers=BOB).json()["id"]
    assert keyed.get(f"/v1/jobs/{mine}", headers=ALICE).status_code == 200
    assert keyed.get(f"/v1/jobs/{mine}", headers=BOB).status_code == 404
    assert keyed.get(f"/v1/jobs/{mine}?wait=1", headers=BOB).status_code == 404
    assert keyed.post(f"/v1/jobs/{mine}/cancel", headers=BOB).status_code == 404
    assert [j["id"] for j in keyed.get("/v1/jobs", headers=ALICE).json()["items"]] == [mine]
    assert [j["id"] for j in keyed.get("/v1/jobs", headers=BOB).json()["items"]] == [theirs]
    assert keyed.get("/v1/jobs", headers=ANON).json()["items"] == []
    workers.drain()
    assert keyed.get(f"/v1/jobs/{mine}", headers=ALICE).json()["status"] == "succeeded"


def test_idempotency_keys_are_scoped_per_api_key(keyed: TestClient) -> None:
    body = {**HASH, "idempotencyKey": "order-1"}
    a = keyed.post("/v1/jobs", json=body, headers=ALICE)
    b = keyed.post("/v1/jobs", json=body, headers=BOB)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["id"] != b.json()["id"]
    again = keyed.post("/v1/jobs", json=body, headers=ALICE)
    assert again.status_code == 200
    assert again.json()["id"] == a.json()["id"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("a:one-secret,,b:two-secret", "empty"),
        ("short", "at least"),
        ("bad name:long-enough-secret", "name"),
        ("a:long-enough-secret,b:long-enough-secret", "twice"),
        ("a:long-enough-secret,a:other-long-secret", "twice"),
    ],
)
def test_malformed_api_keys_stop_the_process_without_showing_a_secret(
    make_settings: Callable[..., Settings], raw: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_api_keys(raw)
    assert "long-enough-secret" not in str(info.value)
    assert "one-secret" not in str(info.value)


def test_bad_api_keys_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from tasksvc.config import load_settings

    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.setenv("API_KEYS", "ops:tiny")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.variable == "API_KEYS"
    assert "tiny" not in str(info.value)


def test_unnamed_keys_get_a_scope_that_does_not_reveal_them() -> None:
    (key,) = parse_api_keys("anonymous-key-333")
    assert key.scope.startswith("key-")
    assert "anonymous" not in key.scope
    assert scope_of((key,), "Bearer anonymous-key-333") == key.scope
    assert scope_of((key,), "bearer anonymous-key-333") == key.scope
    assert scope_of((key,), "Bearer anonymous-key-334") is None


def test_a_request_without_a_key_is_401_before_its_body_is_read(keyed: TestClient) -> None:
    resp = keyed.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 401
    big = b"x" * 2_000_000  # over MAX_BODY_BYTES, yet a stranger only learns that it needs a key
    assert keyed.post("/v1/jobs", content=big, headers={"content-type": "application/json"}).status_code == 401
