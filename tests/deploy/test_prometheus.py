"""deploy/prometheus: promtool checks the config and the rules and runs alerts_test.yml.

promtool comes from Debian's `prometheus` package; without it these tests fail unless
TASKSVC_ALLOW_NO_PROMTOOL=1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .helpers import environment, grafana_to_promql, prometheus_tool

PROMETHEUS = Path("deploy/prometheus")


def promtool() -> str:
    return prometheus_tool("promtool")


def run(repo: Path, *args: str) -> None:
    done = subprocess.run([promtool(), *args], cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def load(repo: Path, name: str) -> dict[str, Any]:
    doc = yaml.safe_load((repo / PROMETHEUS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def test_config_is_valid(repo: Path) -> None:
    run(repo, "check", "config", str(PROMETHEUS / "prometheus.yml"))


def test_rules_are_valid(repo: Path) -> None:
    run(repo, "check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_alerts_pass_their_unit_tests(repo: Path) -> None:
    run(repo, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))


def test_dashboard_queries_are_valid_promql(repo: Path, tmp_path: Path) -> None:
    dashboard = json.loads((repo / "deploy/grafana/dashboards/tasksvc.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] if panel["type"] != "row" for target in panel["targets"]]
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(repo, "check", "rules", str(tmp_path / "dashboard.yml"))


def test_every_alert_is_tested_firing_and_not_firing(repo: Path) -> None:
    alerts = {rule["alert"] for group in load(repo, "alerts.yml")["groups"] for rule in group["rules"]}
    cases = [case for test in load(repo, "alerts_test.yml")["tests"] for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert load(repo, "alerts_test.yml")["rule_files"] == ["alerts.yml"]
    assert alerts - fired == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_every_rule_file_is_loaded(repo: Path) -> None:
    assert load(repo, "prometheus.yml")["rule_files"] == ["alerts.yml"]


def test_scrape_targets_match_compose(repo: Path, services: dict[str, dict[str, Any]]) -> None:
    jobs = {job["job_name"]: job for job in load(repo, "prometheus.yml")["scrape_configs"]}
    app_port = services["tasksvc_app"]["command"][services["tasksvc_app"]["command"].index("--port") + 1]
    assert jobs["tasksvc_app"]["static_configs"] == [{"targets": [f"tasksvc_app:{app_port}"]}]
    assert jobs["tasksvc_app"].get("metrics_path", "/metrics") == "/metrics"
    worker_port = int(environment(services["tasksvc_worker"])["WORKER_METRICS_PORT"])
    [sd] = jobs["tasksvc_worker"]["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["tasksvc_worker"], "A", worker_port)
