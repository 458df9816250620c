"""The Grafana dashboard and the alert rules use only metrics (and labels) that really exist.

Two references: an allow-list written from SPEC section 12 and the instrumentator's defaults,
and the exposition itself, rendered from `tasksvc.metrics` and a FastAPI app instrumented
the way `tasksvc.api.app` does it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fastapi_instrumentator import Instrumentator

from tasksvc.metrics import LiveGauges, Metrics
from tasksvc.models import JobStatus

from .helpers import label_names, metric_names

# SPEC section 12, as exposed: counters with `_total`, histograms as `_bucket/_sum/_count`.
SPEC_COUNTERS = {
    "tasksvc_jobs_submitted": {"type"},
    "tasksvc_jobs_deduplicated": {"type"},
    "tasksvc_jobs_rejected": {"reason"},
    "tasksvc_job_attempts": {"type", "outcome"},
    "tasksvc_job_retries": {"type"},
    "tasksvc_jobs_finished": {"type", "status"},
    "tasksvc_compensations": {"type", "outcome"},
}
SPEC_HISTOGRAMS = {"tasksvc_job_duration_seconds": {"type"}, "tasksvc_job_latency_seconds": {"type"}}
SPEC_GAUGES: dict[str, set[str]] = {
    "tasksvc_queue_depth": set(),
    "tasksvc_queue_capacity": set(),
    "tasksvc_workers": set(),
}
# prometheus-fastapi-instrumentator's default metrics (its metrics.default()).
HTTP_COUNTERS = {"http_requests": {"handler", "method", "status"}}
HTTP_SUMMARIES = {"http_request_size_bytes": {"handler"}, "http_response_size_bytes": {"handler"}}
HTTP_HISTOGRAMS = {"http_request_duration_seconds": {"handler", "method"}, "http_request_duration_highr_seconds": set()}
# Written by Prometheus itself for every scrape target.
PROMETHEUS_OWN: dict[str, set[str]] = {"up": set()}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def allowed() -> dict[str, set[str]]:
    """{series name: its label names} from the lists above."""
    names: dict[str, set[str]] = {}
    for counters in (SPEC_COUNTERS, HTTP_COUNTERS):
        names |= {f"{name}_total": labels for name, labels in counters.items()}
    for histograms in (SPEC_HISTOGRAMS, HTTP_HISTOGRAMS):
        for name, labels in histograms.items():
            names |= {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
    for name, labels in HTTP_SUMMARIES.items():
        names |= {f"{name}_sum": labels, f"{name}_count": labels}
    return names | SPEC_GAUGES | PROMETHEUS_OWN


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[str]]:
    """{series name: label names} of what tasksvc and the instrumentator really expose."""
    registry = CollectorRegistry()
    for metric in vars(Metrics(registry)).values():
        if isinstance(metric, MetricWrapperBase):
            metric.labels(*["x"] * len(metric._labelnames))  # a labelled metric shows once it has a child
    registry.register(LiveGauges(lambda: 0, 10, lambda: 1))
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    Instrumentator(should_group_status_codes=False, excluded_handlers=["/metrics"], registry=registry).instrument(app)
    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
    found: dict[str, set[str]] = {name: set() for name in PROMETHEUS_OWN}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.fixture(scope="module")
def dashboard(repo: Path) -> dict[str, Any]:
    doc = json.loads((repo / "deploy/grafana/dashboards/tasksvc.json").read_text())
    assert isinstance(doc, dict)
    return doc


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return found


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def alert_exprs(repo: Path) -> list[str]:
    rules = yaml.safe_load((repo / "deploy/prometheus/alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exprs(dashboard: dict[str, Any], repo: Path) -> list[str]:
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    # label_values(metric, label) is Grafana's, not PromQL: check its metric as a selector.
    variables = [v.removeprefix("label_values(").split(",")[0] for v in variables]
    return dashboard_exprs(dashboard) + alert_exprs(repo) + variables


@pytest.mark.parametrize(
    ("expr", "names", "labels"),
    [
        ('sum by (type) (rate(a_total{type=~"$type"}[$__rate_interval]))', {"a_total"}, {"a_total": {"type"}}),
        ("max(b) < 1 or absent(b)", {"b"}, {}),
        ("histogram_quantile(0.95, sum by (le) (rate(c_bucket[5m]))) > 60", {"c_bucket"}, {}),
        ('sum(rate(d{s="x"}[5m])) / sum(rate(e[5m]))', {"d", "e"}, {"d": {"s"}}),
        ('count(up{job="tasksvc_worker"} == 1)', {"up"}, {"up": {"job"}}),
    ],
)
def test_the_promql_reader(expr: str, names: set[str], labels: dict[str, set[str]]) -> None:
    assert metric_names(expr) == names
    assert {k: v for k, v in label_names(expr).items() if k} == labels


def test_every_panel_queries_prometheus(dashboard: dict[str, Any]) -> None:
    assert panels(dashboard)
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} has an empty query"
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "prometheus"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_datasource_is_provisioned_with_that_uid(repo: Path) -> None:
    doc = yaml.safe_load((repo / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = doc["datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")


def test_the_allow_list_matches_the_exposition(exposed: dict[str, set[str]]) -> None:
    for name, labels in allowed().items():
        assert name in exposed, f"{name} is in SPEC section 12 or the instrumentator's list but not exposed"
        assert exposed[name] == labels, name


def test_only_metrics_that_exist(exprs: list[str], exposed: dict[str, set[str]]) -> None:
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used, "no metric found in the queries"
    assert used - set(allowed()) == set(), "not in SPEC section 12 nor the instrumentator's metrics"
    assert used - set(exposed) == set(), "not in the exposition of tasksvc.metrics and the instrumentator"


def test_only_labels_that_exist(exprs: list[str], exposed: dict[str, set[str]]) -> None:
    for expr in exprs:
        names = metric_names(expr)
        for metric, labels in label_names(expr).items():
            known = set().union(*(exposed[name] for name in names)) if metric == "" else exposed[metric]
            assert labels <= known | TARGET_LABELS, f"{expr}: unknown labels {labels - known - TARGET_LABELS}"


def test_alert_label_values_are_ones_tasksvc_emits(repo: Path) -> None:
    exprs = " ".join(alert_exprs(repo))
    registry = CollectorRegistry()
    Metrics(registry)
    help_text = {f.name: f.documentation for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert 'tasksvc_jobs_finished_total{status="failed"}' in exprs
    assert JobStatus("failed")
    assert 'tasksvc_compensations_total{outcome="failed"}' in exprs
    assert "|failed|" in help_text["tasksvc_compensations"]


def test_the_panels_cover_the_service(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs(dashboard)))
    tasksvc = {f"{n}_total" for n in SPEC_COUNTERS} | {f"{n}_bucket" for n in SPEC_HISTOGRAMS} | set(SPEC_GAUGES)
    assert tasksvc <= used, f"no panel shows {sorted(tasksvc - used)}"
    assert {"http_requests_total", "http_request_duration_seconds_bucket"} <= used
