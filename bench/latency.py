"""Latency with idle workers: submit -> terminal (vs. bare RQ), and how late retries start."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson

from bench import baseline
from bench.context import Bench
from bench.loadgen import Connection, run
from bench.report import PhaseResult, Row, Target, ms, percentile

LATENCY_TARGET = Target("<=", 2.0)
RETRY_TARGET = Target("<=", 100.0, unit="ms")
WARM_UP_JOBS = 5
WAIT_S = 5
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def _job_body(data: str, **payload: Any) -> bytes:
    return orjson.dumps({"type": "hash", "payload": {"data": data, "algo": "sha256", **payload}})


# --- submit -> terminal ---------------------------------------------------------------------


def submit_to_terminal(bench: Bench) -> PhaseResult:
    """One job at a time: POST, then GET ?wait= until terminal; vs. enqueue + RQ's blocking result read."""
    n = bench.sizes.latency_jobs
    bench.backends.empty()
    with bench.tasksvc_api() as api, bench.tasksvc_worker():
        ours, server_side = run(lambda: _tasksvc_round_trips(api.port, n))
    bench.backends.empty()
    with bench.rq_workers():
        base = _rq_round_trips(bench, n)
    bench.backends.empty()
    p50, base_p50 = percentile(ours, 50), percentile(base, 50)
    rows = [
        Row("submit→terminal p50 (ms)", ms(p50), ms(base_p50), p50 / base_p50, LATENCY_TARGET),
        Row("submit→terminal p99 (ms)", ms(percentile(ours, 99)), ms(percentile(base, 99))),
        Row("  createdAt→finishedAt p50 (ms)", ms(percentile(server_side, 50))),
    ]
    notes = [
        f"submit→terminal: {n} jobs one at a time, {bench.sizes.worker_processes} idle worker processes; tasksvc: "
        f"POST /v1/jobs + GET /v1/jobs/{{id}}?wait={WAIT_S} on one keep-alive connection; "
        f"bare RQ: Queue.enqueue + Job.latest_result(timeout={WAIT_S}) (a blocking XREAD)"
    ]
    raw = {"tasksvc_s": ours, "tasksvc_server_s": server_side, "baseline_s": base}
    return PhaseResult("latency", rows, raw, notes)


async def _tasksvc_round_trips(port: int, n: int) -> tuple[list[float], list[float]]:
    conn = Connection(port)
    took: list[float] = []
    server_side: list[float] = []
    try:
        for i in range(WARM_UP_JOBS + n):
            started = time.perf_counter()
            job = await _submit_and_wait(conn, _job_body(f"latency-{i}"))
            if i >= WARM_UP_JOBS:
                took.append(time.perf_counter() - started)
                server_side.append((_ts(job["finishedAt"]) - _ts(job["createdAt"])).total_seconds())
    finally:
        await conn.close()
    return sorted(took), sorted(server_side)


async def _submit_and_wait(conn: Connection, body: bytes) -> dict[str, Any]:
    resp = await conn.request("POST", "/v1/jobs", body)
    if resp.status != 202:
        raise RuntimeError(f"POST /v1/jobs answered {resp.status}: {resp.body[:300]!r}")
    location = resp.headers["location"]
    return await _wait_terminal(conn, location, WAIT_S)


async def _wait_terminal(conn: Connection, location: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        resp = await conn.request("GET", f"{location}?wait={wait_s:g}")
        job: dict[str, Any] = orjson.loads(resp.body)
        if resp.status == 200 and job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{location} not terminal after 60 s: {job.get('status')}")


def _rq_round_trips(bench: Bench, n: int) -> list[float]:
    took: list[float] = []
    with bench.backends.redis() as redis:
        queue = baseline.queue(redis)
        for i in range(WARM_UP_JOBS + n):
            started = time.perf_counter()
            job = queue.enqueue(baseline.work, f"latency-{i}")
            result = job.latest_result(timeout=WAIT_S)
            if result is None or not result.type == result.Type.SUCCESSFUL:
                raise RuntimeError(f"bare RQ job {job.id} did not succeed within {WAIT_S} s")
            if i >= WARM_UP_JOBS:
                took.append(time.perf_counter() - started)
    return sorted(took)


# --- retry timing -----------------------------------------------------------------------------


def retry_timing(bench: Bench) -> PhaseResult:
    """`failTimes: 1` at default retry settings: start of attempt 2 - (failure time + retryInSeconds)."""
    n, rate = bench.sizes.retry_jobs, bench.sizes.retry_rate
    bench.backends.empty()
    with bench.tasksvc_api() as api, bench.tasksvc_worker():
        jobs = run(lambda: _retried_jobs(api.port, n, rate))
    bench.backends.empty()
    late = sorted(_lateness_s(job) for job in jobs)
    p50, p99, worst, first = percentile(late, 50), percentile(late, 99), late[-1], late[0]
    rows = [
        Row("retry lateness p99 (ms)", ms(p99), "", p99 * 1000, RETRY_TARGET, ratio_text=f"{p99 * 1000:.1f} ms"),
        Row("retry lateness p50 / max / min (ms)", f"{ms(p50)} / {ms(worst)} / {ms(first)}"),
    ]
    notes = [
        f"retry: {n} hash jobs with failTimes 1 submitted at {rate:g}/s, default RETRY_* settings; lateness = "
        "startedAt - errors[0].at - errors[0].retryInSeconds (timestamps have 1 ms resolution)"
    ]
    return PhaseResult("retry", rows, {"lateness_s": late}, notes)


async def _retried_jobs(port: int, n: int, rate: float) -> list[dict[str, Any]]:
    conn = Connection(port)
    locations: list[str] = []
    try:
        started = time.perf_counter()
        for i in range(n):
            resp = await conn.request("POST", "/v1/jobs", _job_body(f"retry-{i}", failTimes=1))
            if resp.status != 202:
                raise RuntimeError(f"POST /v1/jobs answered {resp.status}: {resp.body[:300]!r}")
            locations.append(resp.headers["location"])
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
        return [await _wait_terminal(conn, location, 10) for location in locations]
    finally:
        await conn.close()


def _lateness_s(job: dict[str, Any]) -> float:
    if job["status"] != "succeeded" or len(job["errors"]) != 1:
        raise RuntimeError(f"job {job['id']}: expected one failure then success, got {job['status']}")
    error = job["errors"][0]
    due = _ts(error["at"]).timestamp() + float(error["retryInSeconds"])
    return _ts(job["startedAt"]).timestamp() - due


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)
