"""docker-compose.yml: the stack's wiring, checked without a Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tasksvc.config import Settings, load_settings

from .helpers import depends_on, environment, interpolate, volume_mounts

SERVICES = {"postgres", "redis", "migrate", "tasksvc_app", "tasksvc_worker", "prometheus", "grafana"}
TASKSVC_SERVICES = ["migrate", "tasksvc_app", "tasksvc_worker"]
SETTINGS_VARIABLES = {field.upper() for field in Settings.model_fields}


def test_the_stack_has_its_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES


def test_the_shared_part_is_one_anchor(repo: Path) -> None:
    text = (repo / "docker-compose.yml").read_text()
    assert "x-tasksvc: &tasksvc" in text
    assert text.count("<<: *tasksvc\n") == len(TASKSVC_SERVICES)


def test_every_dependency_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in depends_on(service):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_a_healthy_dependency_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, options in depends_on(service).items():
            if options.get("condition") == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test"), f"{name} waits for {dependency}'s health, which is not checked"
                assert not check.get("disable"), f"{name} waits for {dependency}'s health, which is not checked"


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any], repo: Path) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _target in volume_mounts(service):
            if source.startswith((".", "/", "~")):
                assert (repo / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_api_worker_and_migrate_share_one_image(services: dict[str, dict[str, Any]], repo: Path) -> None:
    images = {services[name]["image"] for name in TASKSVC_SERVICES}
    builds = [services[name]["build"] for name in TASKSVC_SERVICES]
    assert len(images) == 1
    assert all(build == builds[0] for build in builds)
    assert (repo / builds[0]["context"] / builds[0].get("dockerfile", "Dockerfile")).is_file()


@pytest.mark.parametrize("name", TASKSVC_SERVICES)
def test_every_variable_is_a_setting(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    assert "PROMETHEUS_MULTIPROC_DIR" not in env, "`tasksvc worker` sets it itself"
    assert set(env) <= SETTINGS_VARIABLES, f"not settings: {sorted(set(env) - SETTINGS_VARIABLES)}"


@pytest.mark.parametrize("name", TASKSVC_SERVICES)
def test_the_configuration_is_valid(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env: in the container, the environment below is all there is
    for variable in SETTINGS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for key, value in environment(services[name]).items():
        monkeypatch.setenv(key, interpolate(value))
    settings = load_settings()  # what `tasksvc` does at start
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")
    assert settings.redis_url is not None
    assert settings.log_format == "json"


def test_database_url_matches_postgres(services: dict[str, dict[str, Any]]) -> None:
    pg = environment(services["postgres"])
    for name in TASKSVC_SERVICES:
        url = urlsplit(environment(services[name])["DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
        assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        assert url.path == "/" + pg["POSTGRES_DB"]


def test_redis_url_names_the_redis_service(services: dict[str, dict[str, Any]]) -> None:
    for name in ("tasksvc_app", "tasksvc_worker"):
        url = urlsplit(environment(services[name])["REDIS_URL"])
        assert (url.scheme, url.hostname) == ("redis", "redis")


def test_migrate_runs_once_when_postgres_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"  # a quoted "no": YAML's bare no would be False
    assert depends_on(migrate)["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["tasksvc_app", "tasksvc_worker"])
def test_api_and_worker_start_after_migrations(services: dict[str, dict[str, Any]], name: str) -> None:
    deps = depends_on(services[name])
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["postgres"]["condition"] == "service_healthy"


def test_the_api_serves_on_8000(services: dict[str, dict[str, Any]]) -> None:
    app = services["tasksvc_app"]
    assert app["command"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000:8000" in app["ports"]


def test_the_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["tasksvc_worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a fixed host port would stop `--scale tasksvc_worker=N`"
    assert worker["command"][0] == "worker"
    if "--processes" in worker["command"]:
        processes = worker["command"][worker["command"].index("--processes") + 1]
        assert int(interpolate(processes)) >= 1


def test_the_worker_health_and_metrics_use_its_metrics_port(services: dict[str, dict[str, Any]]) -> None:
    worker = services["tasksvc_worker"]
    port = environment(worker)["WORKER_METRICS_PORT"]
    assert port in [str(p) for p in worker["expose"]]
    assert f"127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])


def test_migrate_has_no_api_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_redis_keeps_messages(services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(target == "/data" for _source, target in volume_mounts(services["redis"]))


def test_postgres_is_checked_with_pg_isready(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(target == "/var/lib/postgresql/data" for _source, target in volume_mounts(postgres))


def test_grafana_admin_password_comes_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["grafana"])
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert password == "${GRAFANA_ADMIN_PASSWORD:-admin}"  # noqa: S105 (the documented dev default)
    assert interpolate(password) == "admin"
    assert env.get("GF_SECURITY_ADMIN_USER", "admin") == "admin"


def test_grafana_is_provisioned_from_deploy(services: dict[str, dict[str, Any]], repo: Path) -> None:
    mounts = dict(volume_mounts(services["grafana"]))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((repo / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text())
    paths = [provider["options"]["path"] for provider in providers["providers"]]
    assert paths == [mounts["./deploy/grafana/dashboards"]]
    home = environment(services["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert home == paths[0] + "/tasksvc.json"


def test_prometheus_reads_deploy_prometheus(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = dict(volume_mounts(prometheus))
    assert mounts["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "9090:9090" in prometheus["ports"]


def test_a_stopping_worker_may_finish_its_job(services: dict[str, dict[str, Any]]) -> None:
    worker = services["tasksvc_worker"]
    grace = worker["stop_grace_period"]
    assert grace.endswith("s")
    job_timeout = float(environment(worker).get("JOB_TIMEOUT", Settings.model_fields["job_timeout"].default))
    assert float(grace[:-1]) > job_timeout, "SIGKILL would cut a running job short"
