"""Throughput: submit (HTTP) and drain (workers), each against its bare-RQ baseline; the cost
of the backpressure check next to a submit's time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import orjson
from prometheus_client import CollectorRegistry
from redis import Redis
from rq.job import Job as RQJob
from rq.registry import FinishedJobRegistry

from bench import baseline
from bench.context import Api, Bench
from bench.loadgen import Load, LoadResult, combine, generate
from bench.procs import wait_until
from bench.report import PhaseResult, Row, Target, ms, num
from tasksvc.admission import QueueBound
from tasksvc.db import make_engine
from tasksvc.jobtypes import default_registry
from tasksvc.metrics import Metrics
from tasksvc.queue import MessageQueue, connect
from tasksvc.service import JobService, Submission

SUBMIT_TARGET = Target(">=", 2.0)
DRAIN_TARGET = Target(">=", 2.5)
SUBMIT_BODY = orjson.dumps({"type": "hash", "payload": {"data": "bench", "algo": "sha256"}})
COUNT_TERMINAL = "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"


# --- submit -----------------------------------------------------------------------------------


def submit(bench: Bench) -> PhaseResult:
    """POST /v1/jobs at fixed concurrency: tasksvc api vs. one bare enqueue, in alternating rounds.

    Both servers run side by side (idle while the other is loaded), and the load alternates
    between them, so a change in what else the machine does hits both alike.
    """
    sizes = bench.sizes
    bench.backends.empty()
    with bench.tasksvc_api() as ours_api, bench.baseline_api() as base_api:
        ours_warm, base_warm = _hammer(bench, ours_api, sizes.warmup_s), _hammer(bench, base_api, sizes.warmup_s)
        rounds: list[tuple[LoadResult, LoadResult]] = []
        for _ in range(sizes.submit_rounds):
            slot_s = sizes.submit_s / sizes.submit_rounds
            rounds.append((_hammer(bench, ours_api, slot_s), _hammer(bench, base_api, slot_s)))
    ours, base = combine([r[0] for r in rounds]), combine([r[1] for r in rounds])
    rows_written = _count(bench, "SELECT count(*) FROM jobs")
    with bench.backends.redis() as redis:
        enqueued = baseline.queue(redis).count
    bench.backends.empty()
    ratio = ours.rate / base.rate if base.rate else math.nan
    rows = [
        Row("submit throughput (req/s)", num(ours.rate), num(base.rate), ratio, SUBMIT_TARGET),
        Row("submit latency p50 / p99 (ms)", _p50_p99(ours), _p50_p99(base)),
    ]
    notes = [
        f"submit: {sizes.connections} connections, {sizes.submit_rounds} alternating rounds of "
        f"{sizes.submit_s / sizes.submit_rounds:g} s per server (after {sizes.warmup_s:g} s of warm-up each), "
        f"load generator {ours.tool}; errors: tasksvc {ours.errors}, baseline {base.errors}; "
        f"202s / rows written: tasksvc {ours.ok + ours_warm.ok:,} / {rows_written:,} jobs, "
        f"baseline {base.ok + base_warm.ok:,} / {enqueued:,} RQ jobs (requests in flight when a load stops are "
        "written but not counted)"
    ]
    raw = {
        "tasksvc": [r[0].__dict__ for r in rounds],
        "baseline": [r[1].__dict__ for r in rounds],
        "tasksvc_rate": ours.rate,
        "baseline_rate": base.rate,
    }
    return PhaseResult("submit", rows, raw, notes)


def _hammer(bench: Bench, api: Api, duration_s: float) -> LoadResult:
    sizes = bench.sizes
    result = generate(
        Load(api.port, "POST", "/v1/jobs", SUBMIT_BODY, 202, sizes.connections, duration_s), bench.loadgen
    )
    api.proc.check()
    return result


def _p50_p99(result: LoadResult) -> str:
    return f"{ms(result.p50_s)} / {ms(result.p99_s)}"


def _count(bench: Bench, query: str) -> int:
    with bench.backends.pg() as conn:
        row = conn.execute(query).fetchone()
    value = row[0] if row else 0
    assert isinstance(value, int)
    return value


# --- drain ------------------------------------------------------------------------------------


def drain(bench: Bench) -> PhaseResult:
    """N jobs already queued; N worker processes drain them vs. bare RQ SimpleWorkers."""
    n = bench.sizes.drain_jobs
    bench.backends.empty()
    _queue_tasksvc_jobs(bench, n)
    ours_wall = _timed_drain(bench, n, lambda: _count(bench, COUNT_TERMINAL))
    ours_span, succeeded = _tasksvc_span(bench)
    bench.backends.empty()
    with bench.backends.redis() as redis:
        queue = baseline.queue(redis)
        ids = [queue.enqueue(baseline.work, f"job-{i}").id for i in range(n)]
        finished = FinishedJobRegistry(queue=queue)
        base_wall = _timed_drain(bench, n, lambda: finished.get_job_count(cleanup=False), rq=True)
        base_span = _rq_span(redis, ids)
    bench.backends.empty()
    ours_rate, base_rate = n / ours_span, n / base_span
    rows = [
        Row("drain throughput (jobs/s)", num(ours_rate), num(base_rate), ours_rate / base_rate, DRAIN_TARGET),
        Row(
            "drain wall incl. start-up (s)",
            num(ours_wall, 2),
            num(base_wall, 2),
            base_wall / ours_wall,
            ratio_text=f"{base_wall / ours_wall:.2f}x speed",
        ),
    ]
    notes = [
        f"drain: {n:,} jobs queued first, {bench.sizes.worker_processes} worker processes; throughput = jobs / "
        f"(last finish - first start) from the jobs' own timestamps; tasksvc succeeded {succeeded:,}/{n:,}"
    ]
    raw = {
        "jobs": n,
        "tasksvc": {"span_s": ours_span, "wall_s": ours_wall, "rate": ours_rate, "succeeded": succeeded},
        "baseline": {"span_s": base_span, "wall_s": base_wall, "rate": base_rate},
    }
    return PhaseResult("drain", rows, raw, notes)


def _queue_tasksvc_jobs(bench: Bench, n: int) -> None:
    """Submit through tasksvc's own service code (row + slot + message), 8 threads at once."""
    settings = bench.backends.settings()
    engine = make_engine(settings.sqlalchemy_url)
    redis = connect(bench.backends.redis_url)
    try:
        service = JobService(settings, engine, MessageQueue(redis), default_registry(), Metrics(CollectorRegistry()))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: service.submit(Submission("hash", {"data": f"job-{i}"})), range(n)))
    finally:
        redis.close()
        engine.dispose()


def _timed_drain(bench: Bench, n: int, count: Callable[[], int], *, rq: bool = False) -> float:
    """Seconds from starting the workers until `count()` reaches n.

    Not `--burst`: `tasksvc worker --burst` ignores LOG_LEVEL (RQ logs every job at INFO), which
    would charge tasksvc for log lines a production worker does not write.
    """
    deadline_s = max(60.0, n / 20)
    started = time.perf_counter()
    workers = bench.rq_workers(ready=False) if rq else bench.tasksvc_worker(ready=False)
    with workers:
        wait_until(lambda: count() >= n, timeout_s=deadline_s, what=f"{n} jobs drained")
        return time.perf_counter() - started


def _tasksvc_span(bench: Bench) -> tuple[float, int]:
    query = "SELECT min(started_at), max(finished_at), count(*) FILTER (WHERE status = 'succeeded') FROM jobs"
    with bench.backends.pg() as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    first, last, succeeded = row
    assert isinstance(first, datetime)
    assert isinstance(last, datetime)
    assert isinstance(succeeded, int)
    return (last - first).total_seconds(), succeeded


def _rq_span(redis: Redis, ids: list[str]) -> float:
    jobs = [j for j in RQJob.fetch_many(ids, connection=redis) if j is not None]
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.ended_at for j in jobs if j.ended_at is not None]
    if len(ends) < len(ids):
        raise RuntimeError(f"only {len(ends)} of {len(ids)} bare RQ jobs recorded an end")
    return (max(ends) - min(starts)).total_seconds()


# --- the backpressure check -------------------------------------------------------------------


def admission(bench: Bench, submit_result: PhaseResult | None) -> PhaseResult:
    """`QueueBound.try_admit` + `release` in a tight loop on the real Redis, next to a submit."""
    n = bench.sizes.admission_calls
    with bench.backends.redis() as redis:
        bound = QueueBound(redis, capacity=10**12)
        bound.reset(0)
        for _ in range(100):  # warm: the script is loaded, the connection open
            bound.try_admit()
            bound.release()
        started = time.perf_counter()
        for _ in range(n):
            bound.try_admit()
            bound.release()
        pair_us = (time.perf_counter() - started) / n * 1e6
        started = time.perf_counter()
        for _ in range(n):
            redis.ping()
        ping_us = (time.perf_counter() - started) / n * 1e6
    bench.backends.empty()
    rows = [Row("backpressure try_admit+release (µs)", num(pair_us, 1), f"PING {num(ping_us, 1)}", pair_us / ping_us)]
    raw: dict[str, float] = {"pair_us": pair_us, "ping_us": ping_us}
    if submit_result is not None:
        rate = float(submit_result.raw["tasksvc_rate"])
        per_request_us = 1e6 / rate
        raw["submit_per_request_us"] = per_request_us
        rows.append(
            Row(
                "  share of a submit's server time",
                f"{pair_us / per_request_us:.1%}",
                f"of {num(per_request_us)} µs",
            )
        )
    return PhaseResult("admission", rows, raw, [f"admission: {n:,} calls each, one client, loopback Redis"])
