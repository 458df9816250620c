"""Observability with the real commands (SPEC sections 10-12): exact metric totals across
worker processes (restarts included), HTTP metrics by route template, structured logs,
and no secret in any log or /metrics output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Worker

from tests.processes import TASKSVC, free_port, wait_for

pytestmark = pytest.mark.slow

Start = Callable[..., subprocess.Popen[bytes]]
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]
Series = dict[tuple[str, ...], float]

QUEUE_MAX_SIZE = 500  # not the default, so tasksvc_queue_capacity shows it was read
FAST_RETRIES = {"RETRY_BASE_DELAY": "0.05", "RETRY_MAX_DELAY": "0.2", "QUEUE_MAX_SIZE": str(QUEUE_MAX_SIZE)}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    base: str  # the API
    worker_metrics: str  # the worker supervisor's /metrics
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes] | None

    @property
    def supervisor(self) -> subprocess.Popen[bytes]:
        """`tasksvc worker` (the stack must have been started with worker processes)."""
        assert self.worker is not None
        return self.worker

    def submit(self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> str:
        resp = httpx.post(f"{self.base}/v1/jobs", json=dict(body), headers=dict(headers or {}))
        assert resp.status_code == 202, resp.text
        job_id: str = resp.json()["id"]
        return job_id

    def wait_terminal(
        self, ids: Iterable[str], headers: Mapping[str, str] | None = None, timeout_s: float = 20
    ) -> dict[str, dict[str, Any]]:
        """Poll GET /v1/jobs/{id} until every job is terminal; their final bodies."""
        waiting, done = list(ids), {}

        def all_done() -> bool:
            for job_id in [i for i in waiting if i not in done]:
                job = httpx.get(f"{self.base}/v1/jobs/{job_id}", headers=dict(headers or {})).json()
                if job["status"] in TERMINAL:
                    done[job_id] = job
            return len(done) == len(waiting)

        wait_for(all_done, timeout_s, what=f"{len(waiting)} jobs to be terminal")
        return done


def start_stack(
    started: Start, env: dict[str, str], database_url: str, *, processes: int | None = 2, **extra: str
) -> Stack:
    """Migrate (SQLite; the PostgreSQL fixture is migrated), then `tasksvc api` and `tasksvc worker`."""
    extra = {**FAST_RETRIES, **extra}
    if database_url.startswith("sqlite"):
        done = subprocess.run([*TASKSVC, "migrate"], env={**env, **extra}, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr
    port = free_port()
    api = started("api", "--port", str(port), **extra)
    worker = started("worker", "--processes", str(processes), **extra) if processes else None
    stack = Stack(
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{extra.get('WORKER_METRICS_PORT', env['WORKER_METRICS_PORT'])}/metrics",
        api,
        worker,
    )
    wait_for(lambda: httpx.get(f"{stack.base}/readyz").status_code == 200, what="the API to be ready")
    if processes:
        wait_for(lambda: gauge(scrape(stack.worker_metrics), "tasksvc_workers") == processes, what="workers")
    return stack


# --- reading /metrics ---------------------------------------------------------------------------


def scrape(url: str) -> Samples:
    resp = httpx.get(url)
    assert resp.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def series(samples: Samples, name: str, *labels: str) -> Series:
    """The non-zero samples of `name`, keyed by the values of `labels` (which must be all its labels)."""
    found: Series = {}
    for labelset, value in samples.get(name, {}).items():
        values = dict(labelset)
        assert set(values) == set(labels), f"{name} has labels {sorted(values)}, expected {sorted(labels)}"
        if value:
            found[tuple(values[label] for label in labels)] = value
    return found


def gauge(samples: Samples, name: str) -> float:
    return samples[name][frozenset()]


def scrape_until(url: str, ready: Callable[[Samples], bool], timeout_s: float = 10) -> Samples:
    """Scrape until `ready` holds (or the deadline passes: the caller's asserts then say what differs)."""
    last: Samples = {}

    def attempt() -> bool:
        nonlocal last
        last = scrape(url)
        return ready(last)

    with contextlib.suppress(AssertionError):
        wait_for(attempt, timeout_s, what=f"{url} to settle")
    return last


def latency_count(samples: Samples) -> float:
    return sum(series(samples, "tasksvc_job_latency_seconds_count", "type").values())


# --- worker processes ---------------------------------------------------------------------------


def rq_workers(redis_url: str) -> dict[int, int]:
    """{pid: messages run} of every worker process registered with RQ."""
    redis = Redis.from_url(redis_url)
    try:
        return {int(w.pid or 0): w.successful_job_count for w in Worker.all(connection=redis)}
    finally:
        redis.close()


def worker_children(supervisor: subprocess.Popen[bytes], redis_url: str) -> set[int]:
    """The supervisor's live children that are registered RQ workers (not multiprocessing's helpers)."""
    children = {p.pid for p in psutil.Process(supervisor.pid).children() if p.status() != psutil.STATUS_ZOMBIE}
    return children & set(rq_workers(redis_url))


# --- 1a. exact totals with 2 worker processes ---------------------------------------------------

MIX: list[tuple[str, dict[str, Any]]] = [
    *(("ok", {"type": "hash", "payload": {"data": f"ok-{i}"}}) for i in range(4)),
    *(("bad", {"type": "hash", "payload": {"data": f"bad-{i}", "fail": True}, "maxAttempts": 3}) for i in range(3)),
    *(
        ("undo", {"type": "block_ip", "payload": {"ip": f"192.0.2.{i + 1}", "fail": True}, "maxAttempts": 2})
        for i in range(2)
    ),
    *(("flaky", {"type": "hash", "payload": {"data": f"flaky-{i}", "failTimes": 1}}) for i in range(2)),
]
# what each kind of job must end as: (status, attempts, compensation status)
MIX_ENDS = {
    "ok": ("succeeded", 1, None),
    "bad": ("failed", 3, "skipped"),
    "undo": ("failed", 2, "succeeded"),
    "flaky": ("succeeded", 2, None),
}


def test_metric_totals_are_exact_across_two_worker_processes(
    started: Start, env: dict[str, str], database_url: str, redis_url: str
) -> None:
    stack = start_stack(started, env, database_url, processes=2)
    ids = {stack.submit(body): kind for kind, body in MIX}
    for job_id, job in stack.wait_terminal(ids).items():
        compensation = job["compensation"]["status"] if job["compensation"] else None
        assert (job["status"], job["attempts"], compensation) == MIX_ENDS[ids[job_id]], job

    worker = scrape_until(stack.worker_metrics, lambda s: latency_count(s) == len(MIX))
    assert series(worker, "tasksvc_job_attempts_total", "type", "outcome") == {
        ("hash", "success"): 4 + 2,
        ("hash", "failure"): 3 * 3 + 2,
        ("block_ip", "failure"): 2 * 2,
    }
    assert series(worker, "tasksvc_job_retries_total", "type") == {("hash",): 3 * 2 + 2, ("block_ip",): 2 * 1}
    assert series(worker, "tasksvc_jobs_finished_total", "type", "status") == {
        ("hash", "succeeded"): 4 + 2,
        ("hash", "failed"): 3,
        ("block_ip", "failed"): 2,
    }
    assert series(worker, "tasksvc_compensations_total", "type", "outcome") == {
        ("hash", "skipped"): 3,
        ("block_ip", "succeeded"): 2,
    }
    assert series(worker, "tasksvc_job_duration_seconds_count", "type") == {("hash",): 4 + 11 + 2, ("block_ip",): 4}
    assert series(worker, "tasksvc_job_latency_seconds_count", "type") == {("hash",): 9, ("block_ip",): 2}

    api = scrape_until(stack.base + "/metrics", lambda s: gauge(s, "tasksvc_queue_depth") == 0)
    assert series(api, "tasksvc_jobs_submitted_total", "type") == {("hash",): 9, ("block_ip",): 2}
    assert series(api, "tasksvc_jobs_deduplicated_total", "type") == {}
    assert series(api, "tasksvc_jobs_rejected_total", "reason") == {}
    for samples in (api, scrape(stack.worker_metrics)):
        assert gauge(samples, "tasksvc_queue_capacity") == QUEUE_MAX_SIZE
        assert gauge(samples, "tasksvc_workers") == 2
        assert gauge(samples, "tasksvc_queue_depth") == 0

    # both processes took part (RQ counts the messages each registered worker ran)
    ran = rq_workers(redis_url)
    assert set(ran) == worker_children(stack.supervisor, redis_url)
    assert len(ran) == 2
    assert all(count > 0 for count in ran.values()), ran


# --- 1b. a killed worker process keeps its counts -----------------------------------------------


def test_counters_survive_a_killed_and_restarted_worker_process(
    started: Start, env: dict[str, str], database_url: str, redis_url: str
) -> None:
    stack = start_stack(started, env, database_url, processes=2)
    first = [stack.submit({"type": "hash", "payload": {"data": f"a-{i}"}}) for i in range(4)]
    first += [stack.submit({"type": "hash", "payload": {"data": f"b-{i}", "failTimes": 1}}) for i in range(2)]
    stack.wait_terminal(first)
    scrape_until(stack.worker_metrics, lambda s: latency_count(s) == len(first))

    ran = rq_workers(redis_url)
    assert set(ran) == worker_children(stack.supervisor, redis_url)
    victim = max(ran, key=lambda pid: ran[pid])
    assert ran[victim] > 0  # its counts are there to lose
    os.kill(victim, signal.SIGKILL)
    survivor = set(ran) - {victim}
    wait_for(
        lambda: len(worker_children(stack.supervisor, redis_url) - survivor - {victim}) == 1,
        timeout_s=15,
        what="the supervisor to restart the killed worker process",
    )

    second = [stack.submit({"type": "hash", "payload": {"data": f"c-{i}"}}) for i in range(3)]
    second.append(stack.submit({"type": "hash", "payload": {"data": "d", "fail": True}, "maxAttempts": 2}))
    stack.wait_terminal(second)

    total = len(first) + len(second)
    worker = scrape_until(stack.worker_metrics, lambda s: latency_count(s) == total)
    assert series(worker, "tasksvc_job_attempts_total", "type", "outcome") == {
        ("hash", "success"): 4 + 2 + 3,
        ("hash", "failure"): 2 + 2,
    }
    assert series(worker, "tasksvc_job_retries_total", "type") == {("hash",): 2 + 1}
    assert series(worker, "tasksvc_jobs_finished_total", "type", "status") == {
        ("hash", "succeeded"): 9,
        ("hash", "failed"): 1,
    }
    assert series(worker, "tasksvc_compensations_total", "type", "outcome") == {("hash", "skipped"): 1}
    assert series(worker, "tasksvc_job_duration_seconds_count", "type") == {("hash",): 13}
    assert series(worker, "tasksvc_job_latency_seconds_count", "type") == {("hash",): total}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_workers_gauge_forgets_a_killed_worker_process(
    started: Start, env: dict[str, str], database_url: str, redis_url: str
) -> None:
    stack = start_stack(started, env, database_url, processes=2)
    before = worker_children(stack.supervisor, redis_url)
    os.kill(min(before), signal.SIGKILL)
    wait_for(
        lambda: len(worker_children(stack.supervisor, redis_url) - before) == 1,
        timeout_s=15,
        what="the supervisor to restart the killed worker process",
    )
    samples = scrape_until(stack.worker_metrics, lambda s: gauge(s, "tasksvc_workers") == 2, timeout_s=5)
    assert gauge(samples, "tasksvc_workers") == 2  # the 2 live worker processes, not the dead one


# --- 1c. HTTP metrics by route template ---------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_http_metrics_are_labelled_by_route_template_never_by_id(
    started: Start, env: dict[str, str], database_url: str
) -> None:
    stack = start_stack(started, env, database_url, processes=None)  # no worker: the job stays queued
    job_id = stack.submit({"type": "hash", "payload": {"data": "abc"}})
    unknown = "0190f5e2-7b1c-7d4e-8a9b-0123456789ab"
    assert httpx.get(f"{stack.base}/v1/jobs/{job_id}").status_code == 200
    assert httpx.get(f"{stack.base}/v1/jobs/{job_id}").status_code == 200
    assert httpx.get(f"{stack.base}/v1/jobs/{unknown}").status_code == 404
    assert httpx.get(f"{stack.base}/v1/jobs/not-a-job-id").status_code == 404
    assert httpx.post(f"{stack.base}/v1/jobs/{job_id}/cancel").status_code == 200
    assert httpx.get(f"{stack.base}/v1/no-such-route/{job_id}").status_code == 404

    samples = scrape(stack.base + "/metrics")
    requests = series(samples, "http_requests_total", "handler", "method", "status")
    assert requests[("/v1/jobs/{job_id}", "GET", "200")] == 2
    assert requests[("/v1/jobs/{job_id}", "GET", "404")] == 2
    assert requests[("/v1/jobs/{job_id}/cancel", "POST", "200")] == 1
    assert requests[("/v1/jobs", "POST", "202")] == 1
    assert ("none", "GET", "404") in requests  # an unknown path is grouped, never recorded as sent
    durations = series(samples, "http_request_duration_seconds_count", "handler", "method")
    assert durations[("/v1/jobs/{job_id}", "GET")] == 4
    for name, labelled in samples.items():
        for labelset in labelled:
            for label, value in labelset:
                for sent in (job_id, unknown, "not-a-job-id", "no-such-route"):
                    assert sent not in value, f"{name}{{{label}={value!r}}}"


# --- 1d. logs -----------------------------------------------------------------------------------

ATTEMPT_FIELDS = ("job_id", "job_type", "attempt", "outcome")


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def as_json(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def attempt_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log that are about an attempt (they name one, or say "attempt")."""
    docs = [as_json(line) for line in log_lines(path)]
    return [d for d in docs if d is not None and ("attempt" in d or "attempt" in str(d.get("msg", "")).lower())]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_json_logs_carry_the_attempt_fields_on_every_attempt_line(
    started: Start, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    stack = start_stack(started, env, database_url, processes=1, LOG_FORMAT="json")
    ok = stack.submit({"type": "hash", "payload": {"data": "abc"}})
    bad = stack.submit({"type": "hash", "payload": {"data": "x", "fail": True}, "maxAttempts": 2})
    stack.wait_terminal([ok, bad])
    worker_log, api_log = tmp_path / "worker-1.log", tmp_path / "api-0.log"
    expected = {(ok, "hash", 1, "success"), (bad, "hash", 1, "failure"), (bad, "hash", 2, "failure")}

    def seen() -> set[tuple[Any, ...]]:
        return {tuple(d.get(f) for f in ATTEMPT_FIELDS) for d in attempt_lines(worker_log)}

    wait_for(lambda: seen() >= expected, timeout_s=5, what="a log line for each attempt")
    assert seen() == expected
    for doc in attempt_lines(worker_log):
        assert all(doc.get(field) is not None for field in ATTEMPT_FIELDS), doc
    for path in (worker_log, api_log):
        lines = log_lines(path)
        assert lines
        for line in lines:
            parsed = as_json(line)
            assert parsed is not None, f"{path.name}: not a JSON object: {line!r}"
            assert {"ts", "level", "logger", "msg"} <= set(parsed), parsed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_text_logs_are_not_json_and_still_carry_the_attempt_fields(
    started: Start, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    stack = start_stack(started, env, database_url, processes=1, LOG_FORMAT="text")
    ok = stack.submit({"type": "hash", "payload": {"data": "abc"}})
    bad = stack.submit({"type": "hash", "payload": {"data": "x", "fail": True}, "maxAttempts": 2})
    stack.wait_terminal([ok, bad])
    worker_log, api_log = tmp_path / "worker-1.log", tmp_path / "api-0.log"
    expected = [(ok, 1, "success"), (bad, 1, "failure"), (bad, 2, "failure")]

    def carried(job_id: str, attempt: int, outcome: str) -> bool:
        fields = (f"job_id={job_id}", "job_type=hash", f"attempt={attempt}", f"outcome={outcome}")
        return any(all(f in line.split() for f in fields) for line in log_lines(worker_log))

    wait_for(lambda: all(carried(*e) for e in expected), timeout_s=5, what="a text log line for each attempt")
    for path in (worker_log, api_log):
        lines = log_lines(path)
        assert lines
        assert [line for line in lines if as_json(line) is not None] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_logs_no_rq_chatter_at_info(
    started: Start, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    stack = start_stack(started, env, database_url, processes=1, LOG_FORMAT="json", LOG_LEVEL="INFO")
    stack.wait_terminal([stack.submit({"type": "hash", "payload": {"data": "x", "fail": True}, "maxAttempts": 1})])
    worker_log = tmp_path / "worker-1.log"
    wait_for(lambda: attempt_lines(worker_log), timeout_s=5, what="the attempt's log line")
    docs = [as_json(line) or {} for line in log_lines(worker_log)]
    assert [d for d in docs if d.get("logger", "").startswith("rq") and d.get("level") == "INFO"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_logs_carry_no_terminal_colour_codes(
    started: Start, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    start_stack(started, env, database_url, processes=None, LOG_FORMAT="json")
    docs = [as_json(line) or {} for line in log_lines(tmp_path / "api-0.log")]
    assert docs
    assert [d for d in docs if any("\x1b" in str(value) for value in d.values())] == []


def spawned_children(supervisor: subprocess.Popen[bytes]) -> set[int]:
    """The supervisor's worker processes (multiprocessing spawn children, not its resource tracker)."""
    found = set()
    for child in psutil.Process(supervisor.pid).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.add(child.pid)
    return found


def start_without_redis(started: Start) -> tuple[subprocess.Popen[bytes], set[int]]:
    """`tasksvc worker` whose Redis refuses connections; returns it once a worker process was restarted."""
    worker = started("worker", "--processes", "1", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", LOG_FORMAT="json")
    pids: set[int] = set()

    def restarted() -> bool:
        pids.update(spawned_children(worker))
        return len(pids) >= 2

    wait_for(restarted, timeout_s=15, what="a worker process to die and be restarted")
    return worker, pids


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_logs_stay_json_when_a_worker_process_dies(started: Start, tmp_path: Path) -> None:
    start_without_redis(started)
    lines = log_lines(tmp_path / "worker-0.log")
    assert lines
    assert [line for line in lines if as_json(line) is None] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_log_volume_is_bounded_while_redis_is_down(started: Start, tmp_path: Path) -> None:
    start_without_redis(started)
    log = tmp_path / "worker-0.log"

    def warnings() -> list[datetime]:
        docs = [as_json(line) for line in log_lines(log)]
        return [datetime.fromisoformat(d["ts"]) for d in docs if d and d["level"] in ("WARNING", "ERROR")]

    wait_for(lambda: (w := warnings()) and w[-1] - w[0] >= timedelta(seconds=2), what="2 s of warnings")
    first = warnings()[0]
    assert len([t for t in warnings() if t - first < timedelta(seconds=2)]) <= 10


# --- 1e. no secrets -----------------------------------------------------------------------------

DB_PASSWORD, API_KEY, REDIS_PASSWORD = "s3cr3t-pw", "k3y-s3cr3t", "r3dis-s3cr3t"
SECRETS = (DB_PASSWORD, API_KEY, REDIS_PASSWORD)


def warned(path: Path) -> bool:
    """The JSON log at `path` has a WARNING (or worse) line."""
    return any((as_json(line) or {}).get("level") in ("WARNING", "ERROR", "CRITICAL") for line in log_lines(path))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_no_secret_reaches_logs_metrics_or_answers(
    started: Start, env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """A password in DATABASE_URL and REDIS_URL and an API key, on working and failing paths."""
    db_url = database_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    assert DB_PASSWORD in db_url
    auth = {"Authorization": f"Bearer {API_KEY}"}
    shown: list[str] = []  # every answer and /metrics text the processes gave

    # working: jobs that succeed, fail after retries and are compensated; readiness; errors
    stack = start_stack(started, env, database_url, processes=2, DATABASE_URL=db_url, API_KEYS=f"ops:{API_KEY}")
    ids = [stack.submit(body, auth) for _, body in MIX[:1] + MIX[4:5] + MIX[7:8]]
    stack.wait_terminal(ids, auth)
    shown += [httpx.get(f"{stack.base}/readyz").text, httpx.get(f"{stack.base}/v1/jobs?limit=5", headers=auth).text]
    shown.append(httpx.post(f"{stack.base}/v1/jobs", json={"type": "nope", "payload": {}}, headers=auth).text)
    shown.append(httpx.get(f"{stack.base}/v1/jobs", headers={"Authorization": "Bearer wrong"}).text)
    shown += [httpx.get(stack.base + "/metrics").text, httpx.get(stack.worker_metrics).text]
    wait_for(lambda: len(attempt_lines(tmp_path / "worker-1.log")) >= 4, timeout_s=5, what="attempt log lines")

    # failing: both backends unreachable, with passwords in their URLs
    closed = free_port()
    broken = {
        "DATABASE_URL": f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{closed}/tasksvc",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0",
        "API_KEYS": API_KEY,
        "WORKER_METRICS_PORT": str(free_port()),
        "RECONCILE_INTERVAL": "0.2",
    }
    port = free_port()
    started("api", "--port", str(port), **broken)
    started("worker", "--processes", "1", **broken)
    base = f"http://127.0.0.1:{port}"
    ready = wait_for(lambda: (r := httpx.get(f"{base}/readyz")).status_code == 503 and r, what="a 503 /readyz")
    shown.append(ready.text)
    submit = httpx.post(f"{base}/v1/jobs", json={"type": "hash", "payload": {"data": "x"}}, headers=auth)
    assert submit.status_code == 503
    shown.append(submit.text)
    worker_metrics = f"http://127.0.0.1:{broken['WORKER_METRICS_PORT']}/metrics"
    shown.append(wait_for(lambda: httpx.get(worker_metrics).text, what="the broken worker's /metrics"))
    wait_for(lambda: warned(tmp_path / "api-2.log") and warned(tmp_path / "worker-3.log"), what="failure logs")

    # refused at start: an invalid DATABASE_URL, and a bad value next to a valid secret one
    for bad in ({"DATABASE_URL": f"mysql://root:{DB_PASSWORD}@db/x"}, {"DATABASE_URL": db_url, "RETRY_BACKOFF": "0"}):
        done = subprocess.run([*TASKSVC, "api"], env={**env, **bad}, capture_output=True, text=True, check=False)
        assert done.returncode == 2
        shown.append(done.stdout + done.stderr)

    logs = {path.name: path.read_text() for path in tmp_path.glob("*.log")}
    assert len(logs) == 4
    for secret in SECRETS:
        assert [name for name, text in logs.items() if secret in text] == [], secret
        assert [text for text in shown if secret in text] == [], secret


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unparsable_database_url_stops_with_one_line_and_no_secret(env: dict[str, str]) -> None:
    bad = {**env, "DATABASE_URL": f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:notaport/tasksvc"}
    done = subprocess.run([*TASKSVC, "worker"], env=bad, capture_output=True, text=True, timeout=30, check=False)
    assert DB_PASSWORD not in done.stdout + done.stderr
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "DATABASE_URL" in done.stderr
