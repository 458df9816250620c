"""List latency at a small and a big table: `GET /v1/jobs?limit=50` should not care how many rows.

Rows are written straight into `jobs` with COPY (the columns of the 0001 migration, ids from
`uuid6.uuid7()`, so time-ordered like the API's), a tenth `queued`, a tenth `failed`, the
rest `succeeded`; then VACUUM ANALYZE. The same API process answers at both sizes.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from uuid6 import uuid7

from bench.context import Bench
from bench.loadgen import Connection, run
from bench.report import PhaseResult, Row, Target, ms, num, percentile

FLAT_TARGET = Target("<=", 1.5)
LIMIT = 50
WARM_UP_REQUESTS = 10
COLUMNS = (
    "id, scope, type, status, payload, attempts, max_attempts, result, errors, compensation_status, "
    "compensation_attempts, compensation_finished_at, created_at, updated_at, started_at, finished_at"
)
_RESULT = orjson.dumps({"algo": "sha256", "digest": "ab" * 32}).decode()
_ERRORS_FAILED = orjson.dumps(
    [
        {"attempt": n, "type": "SimulatedFailure", "message": "fail: true", "at": "2026-01-01T00:00:00.000Z"}
        | {"retryInSeconds": 0.5 * n if n < 5 else None}
        for n in range(1, 6)
    ]
).decode()


def list_latency(bench: Bench) -> PhaseResult:
    small, big = bench.sizes.rows_small, bench.sizes.rows_big
    bench.backends.empty()
    with bench.tasksvc_api() as api:
        ids, insert_small_s = _insert(bench, small, 0)
        at_small = _measure(bench, api.port, ids)
        more, insert_big_s = _insert(bench, big - small, small)
        ids += more
        at_big = _measure(bench, api.port, ids)
    bench.backends.empty()
    rows = []
    for name in at_small:
        s50, b50 = percentile(at_small[name], 50), percentile(at_big[name], 50)
        label = f"list {name} p50 (ms) {_k(small)}→{_k(big)}"
        rows.append(Row(label, f"{ms(s50)} → {ms(b50)}", "", b50 / s50, FLAT_TARGET))
    for name in at_small:
        s99, b99 = percentile(at_small[name], 99), percentile(at_big[name], 99)
        rows.append(Row(f"  list {name} p99 (ms)", f"{ms(s99)} → {ms(b99)}", "", b99 / s99))
    rate = (big) / (insert_small_s + insert_big_s)
    notes = [
        f"list: limit={LIMIT}, {bench.sizes.list_requests} sequential requests per query and size; ratio = big / "
        f"small (flat: ≤ {FLAT_TARGET.bound:g}); rows written with COPY at {num(rate)} rows/s; "
        f"deep = a cursor 90% down the table"
    ]
    raw = {"rows_small": small, "rows_big": big, "small_s": at_small, "big_s": at_big}
    return PhaseResult("list", rows, raw, notes)


def _k(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 and rows % 1_000_000 == 0 else f"{rows // 1000}k"


def _insert(bench: Bench, n: int, offset: int) -> tuple[list[uuid.UUID], float]:
    """`n` job rows via COPY (oldest first), then VACUUM ANALYZE; returns their ids and the time taken."""
    started = time.perf_counter()
    ids: list[uuid.UUID] = [uuid7() for _ in range(n)]
    now = datetime.now(UTC)
    with bench.backends.pg() as conn:
        with conn.cursor() as cur, cur.copy(f"COPY jobs ({COLUMNS}) FROM STDIN") as copy:
            for i, job_id in enumerate(ids, start=offset):
                copy.write_row(_row(job_id, i, now - timedelta(microseconds=n + offset - i)))
        conn.execute("VACUUM ANALYZE jobs")
    return ids, time.perf_counter() - started


def _row(job_id: uuid.UUID, i: int, at: datetime) -> tuple[object, ...]:
    payload = f'{{"data":"row-{i}","algo":"sha256"}}'
    kind = i % 10
    if kind == 0:  # queued
        return (job_id, "", "hash", "queued", payload, 0, 5, None, "[]", None, 0, None, at, at, None, None)
    if kind == 1:  # failed after 5 attempts, nothing to undo
        return (job_id, "", "hash", "failed", payload, 5, 5, None, _ERRORS_FAILED, "skipped", 0, at, at, at, at, at)
    return (job_id, "", "hash", "succeeded", payload, 1, 5, _RESULT, "[]", None, 0, None, at, at, at, at)


def _cursor(job_id: uuid.UUID) -> str:
    """The API's cursor format (base64url of the last id's hex, unpadded)."""
    return base64.urlsafe_b64encode(job_id.hex.encode()).decode().rstrip("=")


def _measure(bench: Bench, port: int, ids: list[uuid.UUID]) -> dict[str, list[float]]:
    deep = ids[len(ids) // 10]  # newest first: 90% of the rows are newer
    paths = {
        "first page": f"/v1/jobs?limit={LIMIT}",
        "deep page": f"/v1/jobs?limit={LIMIT}&cursor={_cursor(deep)}",
        "status=queued": f"/v1/jobs?limit={LIMIT}&status=queued",
    }
    return run(lambda: _time_paths(port, paths, bench.sizes.list_requests))


async def _time_paths(port: int, paths: dict[str, str], n: int) -> dict[str, list[float]]:
    """Each path n times (after a warm-up), taking turns, so the three see the same conditions."""
    conn = Connection(port)
    timings: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for i in range(WARM_UP_REQUESTS + n):
            for name, path in paths.items():
                started = time.perf_counter()
                resp = await conn.request("GET", path)
                elapsed = time.perf_counter() - started
                page = orjson.loads(resp.body)
                if resp.status != 200 or len(page["items"]) != LIMIT:
                    raise RuntimeError(f"GET {path} answered {resp.status} with {len(page.get('items', []))} items")
                if i >= WARM_UP_REQUESTS:
                    timings[name].append(elapsed)
    finally:
        await conn.close()
    return {name: sorted(took) for name, took in timings.items()}
