"""A real Prometheus scraping the real `tasksvc api` and `tasksvc worker`: every query of the
Grafana dashboard returns data, the totals Prometheus sees are exact, and the alert rules
of deploy/prometheus/alerts.yml evaluate without error against live series.

Needs the `prometheus` binary (Debian package `prometheus`); without it the test fails
unless TASKSVC_ALLOW_NO_PROMTOOL=1 (as tests/deploy/test_prometheus.py does for promtool).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.deploy.helpers import grafana_to_promql, prometheus_tool
from tests.processes import TASKSVC, free_port, stop, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy/grafana/dashboards/tasksvc.json"
DEPLOY = REPO / "deploy/prometheus"
ALERTS = DEPLOY / "alerts.yml"
Start = Callable[..., subprocess.Popen[bytes]]

# Dashboard queries allowed to return no series with the waves below, each with its reason.
# None: wave 1 includes a replay (deduplicated) and a refused submission (rejected, HTTP 5xx);
# compensations{outcome="failed"} has no data, but its panel sums by outcome, and `skipped`
# and `succeeded` do have data.
NO_DATA_EXPECTED: dict[str, str] = {}
# Dashboard queries that may read only 0 (or NaN) at the end; every other one must show wave 2.
NOT_POSITIVE_EXPECTED = {
    "Rejected submissions by reason / A": "refused only in wave 1: without primed series the counter first "
    "appears at its final value, which is no rate",
    "HTTP errors (5xx) / A": "the one 503 is in wave 1, and the instrumentator creates its series at 1",
    "Queue depth vs capacity / A": "the queue is empty once both waves are done",
}

# one wave: 11 jobs (the first with an idempotency key, so that wave 2 replays it)
WAVE: list[dict[str, Any]] = [
    {"type": "hash", "payload": {"data": "keyed"}, "idempotencyKey": "live-1"},
    *({"type": "hash", "payload": {"data": f"ok-{i}"}} for i in range(3)),
    *({"type": "hash", "payload": {"data": f"bad-{i}", "fail": True}, "maxAttempts": 3} for i in range(3)),
    *({"type": "block_ip", "payload": {"ip": f"192.0.2.{i + 1}", "fail": True}, "maxAttempts": 2} for i in range(2)),
    *({"type": "hash", "payload": {"data": f"flaky-{i}", "failTimes": 1}} for i in range(2)),
]
# what Prometheus must see once both waves are done (sums over the API and the worker);
# wave 2 is wave 1 without the keyed job, which is replayed
TOTALS = {
    "sum(tasksvc_jobs_submitted_total)": 11 + 10,
    "sum(tasksvc_jobs_deduplicated_total)": 1 + 1,
    'sum(tasksvc_jobs_rejected_total{reason="queue_full"})': 1,
    "sum(tasksvc_job_attempts_total)": (4 + 3 * 3 + 2 * 2 + 2 * 2) + (3 + 3 * 3 + 2 * 2 + 2 * 2),
    'sum(tasksvc_job_attempts_total{outcome="success"})': (4 + 2) + (3 + 2),
    "sum(tasksvc_job_retries_total)": 2 * (3 * 2 + 2 * 1 + 2),
    'sum(tasksvc_jobs_finished_total{status="failed"})': 2 * (3 + 2),
    "sum(tasksvc_compensations_total)": 2 * (3 + 2),
    "sum(tasksvc_job_latency_seconds_count)": 11 + 10,
    "max(tasksvc_workers)": 2,
    "max(tasksvc_queue_depth)": 0,
    "max(tasksvc_queue_capacity)": len(WAVE),
    'count(up{job=~"tasksvc_app|tasksvc_worker"} == 1)': 2,
}


def prometheus_binary() -> str:
    return prometheus_tool("prometheus")


def dashboard_exprs() -> dict[str, str]:
    """{panel title / refId: PromQL} of every target, rows' nested panels included."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": grafana_to_promql(target["expr"])
        for panel in panels(doc["panels"])
        for target in panel.get("targets", [])
    }


class Prometheus:
    """A Prometheus server of the test's own, every second scraping the API and the worker on loopback.

    Its configuration is deploy/prometheus/prometheus.yml with the same jobs, metrics paths and
    rule files, only with loopback targets in place of compose's names and 1 s intervals.
    """

    def __init__(self, tmp: Path, api_port: int, worker_port: int) -> None:
        binary = prometheus_binary()
        port = free_port()
        deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        targets = {"tasksvc_app": api_port, "tasksvc_worker": worker_port, "prometheus": port}
        jobs = {job["job_name"]: job.get("metrics_path", "/metrics") for job in deployed["scrape_configs"]}
        assert set(jobs) == set(targets), "deploy/prometheus/prometheus.yml has other jobs than this test knows"
        for rule_file in deployed["rule_files"]:
            shutil.copy(DEPLOY / rule_file, tmp / rule_file)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": deployed["rule_files"],
            "scrape_configs": [
                {
                    "job_name": name,
                    "metrics_path": path,
                    "static_configs": [{"targets": [f"127.0.0.1:{targets[name]}"]}],
                }
                for name, path in jobs.items()
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{port}"
        with (tmp / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params)
        body = resp.json()
        assert resp.status_code == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def up(self, job: str) -> bool:
        targets = self.api("targets", state="active")["activeTargets"]
        return any(t["labels"]["job"] == job and t["health"] == "up" for t in targets)

    def stop(self) -> None:
        stop(self.proc, timeout_s=10)


def submit(base: str, bodies: list[dict[str, Any]]) -> list[str]:
    ids = []
    for body in bodies:
        resp = httpx.post(f"{base}/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


def wait_terminal(base: str, ids: list[str]) -> None:
    terminal = ("succeeded", "failed", "cancelled")
    wait_for(
        lambda: all(httpx.get(f"{base}/v1/jobs/{job_id}").json()["status"] in terminal for job_id in ids),
        timeout_s=20,
        what="every job to be terminal",
    )


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[int, int], Prometheus]]:
    prometheus_binary()  # fail (or skip) before anything starts
    servers: list[Prometheus] = []

    def _start(api_port: int, worker_port: int) -> Prometheus:
        servers.append(Prometheus(tmp_path, api_port, worker_port))
        return servers[-1]

    yield _start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_dashboard_query_returns_data_from_live_processes(
    started: Start,
    env: dict[str, str],
    database_url: str,
    prometheus_factory: Callable[[int, int], Prometheus],
) -> None:
    extra = {"RETRY_BASE_DELAY": "0.05", "RETRY_MAX_DELAY": "0.2", "QUEUE_MAX_SIZE": str(len(WAVE))}
    done = subprocess.run([*TASKSVC, "migrate"], env={**env, **extra}, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    api_port, worker_port = free_port(), int(env["WORKER_METRICS_PORT"])
    base = f"http://127.0.0.1:{api_port}"
    started("api", "--port", str(api_port), **extra)
    prom = prometheus_factory(api_port, worker_port)
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="the API to be ready")
    wait_for(lambda: httpx.get(f"{prom.url}/-/ready").status_code == 200, what="Prometheus to be ready")
    wait_for(lambda: prom.up("tasksvc_app") and prom.up("prometheus"), what="Prometheus to scrape the API")

    # wave 1, no worker yet: the wave fills the queue, one more is refused, a replay is still answered
    first = submit(base, WAVE)
    assert httpx.post(f"{base}/v1/jobs", json={"type": "hash", "payload": {"data": "1 too many"}}).status_code == 503
    replay = httpx.post(f"{base}/v1/jobs", json=WAVE[0])
    assert (replay.status_code, replay.headers.get("Idempotent-Replayed")) == (200, "true")
    started("worker", "--processes", "2", **extra)
    wait_terminal(base, first)
    wait_for(
        lambda: prom.value('sum(tasksvc_job_latency_seconds_count{job="tasksvc_worker"})') == len(first),
        what="Prometheus to scrape the worker after wave 1",
    )

    # wave 2, under Prometheus's eyes: every job panel must show it
    second = submit(base, WAVE[1:])
    assert httpx.post(f"{base}/v1/jobs", json=WAVE[0]).headers.get("Idempotent-Replayed") == "true"
    wait_terminal(base, second)

    seen: dict[str, float | None] = {}

    def totals_seen() -> bool:
        seen.update({expr: prom.value(expr) for expr in TOTALS})
        return seen == TOTALS

    try:
        wait_for(totals_seen, timeout_s=15, what="Prometheus to see the totals")
    except AssertionError:
        assert seen == TOTALS  # says which differ

    exprs = dashboard_exprs()
    assert set(NO_DATA_EXPECTED) | set(NOT_POSITIVE_EXPECTED) <= set(exprs), "stale entry in an exception list"
    missing: dict[str, list[Any]] = {}

    def every_query_shows_data() -> bool:
        missing.clear()
        for name, expr in exprs.items():
            values = [float(series["value"][1]) for series in prom.query(expr)]
            if name in NO_DATA_EXPECTED:
                continue
            if not values or (name not in NOT_POSITIVE_EXPECTED and not any(v > 0 for v in values)):
                missing[name] = values  # no series, or only 0 / NaN
        return not missing

    try:
        wait_for(every_query_shows_data, timeout_s=15, what="every dashboard query to show data")
    except AssertionError:
        assert missing == {}, "dashboard queries without data: {name: values}"

    # the alert rules evaluate cleanly on live series; with workers up and the API scraped, these stay quiet
    def rules() -> dict[str, dict[str, Any]]:
        groups = prom.api("rules")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}

    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    wait_for(
        lambda: set(rules()) == alerts and all(r["lastEvaluation"] > "2000" for r in rules().values()),
        timeout_s=10,
        what="Prometheus to evaluate every alert rule",
    )
    wait_for(
        lambda: all(rules()[name]["state"] == "inactive" for name in ("TasksvcNoWorkers", "TasksvcApiDown")),
        timeout_s=10,
        what="TasksvcNoWorkers and TasksvcApiDown to be inactive",
    )
    assert {name: (r["health"], r.get("lastError", "")) for name, r in rules().items()} == {
        name: ("ok", "") for name in alerts
    }
