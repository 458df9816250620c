"""Settings (SPEC section 11): defaults, one clear line per bad value, `.env`, and the CLI's fail-fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasksvc import cli
from tasksvc.config import Settings, load_settings
from tasksvc.errors import ConfigError

SPEC_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_BASE_DELAY",
    "RETRY_BACKOFF",
    "RETRY_JITTER_RATIO",
    "RETRY_MAX_DELAY",
    "RETRY_MAX_ATTEMPTS_LIMIT",
    "QUEUE_MAX_SIZE",
    "JOB_TIMEOUT",
    "WORKER_LOST_TIMEOUT",
    "IDEMPOTENCY_TTL",
    "MAX_BODY_BYTES",
    "API_KEYS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "RECONCILE_INTERVAL",
    "WORKER_METRICS_PORT",
}
SECRET = "hunter2"  # noqa: S105 - a fake password whose absence from error text is checked


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No tasksvc variable from the outside (in any case: settings are case-insensitive), no `.env`."""
    known = SPEC_VARIABLES | {name.upper() for name in Settings.model_fields}
    for name in list(os.environ):
        if name.upper() in known:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigError:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value


# -- defaults ---------------------------------------------------------------------------------


def test_settings_cover_exactly_the_spec_variables() -> None:
    assert {name.upper() for name in Settings.model_fields} == SPEC_VARIABLES


def test_cli_help_names_every_variable() -> None:
    read_somewhere = {name for names in cli.READS.values() for name in names}
    assert set(SPEC_VARIABLES) <= read_somewhere


def test_defaults_match_the_spec() -> None:
    s = load_settings()
    assert s.database_url.get_secret_value() == "sqlite:///./tasksvc.db"
    assert s.redis_url is None
    assert s.retry_max_attempts == 5
    assert s.retry_base_delay == 1.0
    assert s.retry_backoff == 2.0
    assert s.retry_jitter_ratio == 0.5
    assert s.retry_max_delay == 300.0
    assert s.retry_max_attempts_limit == 20
    assert s.queue_max_size == 10_000
    assert s.job_timeout == 60.0
    assert s.idempotency_ttl == 86_400
    assert s.max_body_bytes == 1_048_576
    assert s.api_keys is None
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    # No number in the spec for these: they only have to be usable.
    assert s.worker_lost_timeout > 0
    assert s.reconcile_interval > 0
    assert 0 <= s.worker_metrics_port <= 65535


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RETRY_JITTER_RATIO", "1")
    monkeypatch.setenv("LOG_LEVEL", "debug")  # case of the level does not matter
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    s = load_settings()
    assert (s.retry_max_attempts, s.retry_jitter_ratio, s.log_level) == (3, 1.0, "DEBUG")
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value() == "redis://localhost:6379/0"


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RETRY_JITTER_RATIO": "2"}, "RETRY_JITTER_RATIO"),
        ({"RETRY_JITTER_RATIO": "-0.1"}, "RETRY_JITTER_RATIO"),
        ({"RETRY_JITTER_RATIO": "nan"}, "RETRY_JITTER_RATIO"),
        ({"RETRY_BASE_DELAY": "0"}, "RETRY_BASE_DELAY"),
        ({"RETRY_BACKOFF": "0.5"}, "RETRY_BACKOFF"),
        ({"RETRY_MAX_DELAY": "0.5"}, "RETRY_MAX_DELAY"),  # below the default base delay of 1 s
        ({"RETRY_BASE_DELAY": "10", "RETRY_MAX_DELAY": "5"}, "RETRY_MAX_DELAY"),
        ({"RETRY_MAX_ATTEMPTS": "0"}, "RETRY_MAX_ATTEMPTS"),
        ({"RETRY_MAX_ATTEMPTS": "21"}, "RETRY_MAX_ATTEMPTS"),  # above the default limit of 20
        ({"RETRY_MAX_ATTEMPTS": "8", "RETRY_MAX_ATTEMPTS_LIMIT": "7"}, "RETRY_MAX_ATTEMPTS"),
        ({"RETRY_MAX_ATTEMPTS": "1.5"}, "RETRY_MAX_ATTEMPTS"),
        ({"QUEUE_MAX_SIZE": "abc"}, "QUEUE_MAX_SIZE"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"WORKER_METRICS_PORT": "70000"}, "WORKER_METRICS_PORT"),
        ({"WORKER_METRICS_PORT": "-1"}, "WORKER_METRICS_PORT"),
        ({"JOB_TIMEOUT": "0"}, "JOB_TIMEOUT"),
    ],
)
def test_bad_value_raises_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    error = config_error(monkeypatch, **env)
    assert error.variable == variable
    text = str(error)
    assert variable in text
    assert "\n" not in text
    assert error.reason
    assert "\n" not in error.reason


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": f"mysql://user:{SECRET}@h/db"},
        {"REDIS_URL": f"http://user:{SECRET}@h:6379/0"},
    ],
)
def test_a_secret_never_appears_in_the_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    error = config_error(monkeypatch, **env)
    assert error.variable == next(iter(env))
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in error.reason


def test_a_secret_never_appears_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://user:{SECRET}@h/db")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@h:6379/0")
    monkeypatch.setenv("API_KEYS", f"ops:{SECRET}-{SECRET}")
    s = load_settings()
    assert SECRET not in repr(s)
    assert SECRET not in str(s)


@pytest.mark.parametrize(
    "variable", ["RETRY_MAX_DELAY", "RETRY_BASE_DELAY", "RETRY_BACKOFF", "JOB_TIMEOUT", "RECONCILE_INTERVAL"]
)
def test_infinity_is_a_bad_value(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    assert config_error(monkeypatch, **{variable: "inf"}).variable == variable


# -- .env -------------------------------------------------------------------------------------


def test_dotenv_in_the_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("RETRY_MAX_ATTEMPTS=7\nLOG_FORMAT=text\n")
    s = load_settings()
    assert (s.retry_max_attempts, s.log_format) == (7, "text")


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("RETRY_MAX_ATTEMPTS=7\n")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    assert load_settings().retry_max_attempts == 3


def test_bad_value_in_dotenv_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text(f"RETRY_JITTER_RATIO=2\nDATABASE_URL=mysql://user:{SECRET}@h/db\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.variable in {"RETRY_JITTER_RATIO", "DATABASE_URL"}
    assert SECRET not in str(info.value)


# -- sqlalchemy_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/tasks", "postgresql+psycopg://u:p@db:5432/tasks"),  # psycopg 3 driver
        ("postgresql+psycopg://u:p@db/tasks", "postgresql+psycopg://u:p@db/tasks"),  # explicit driver kept
        ("sqlite:///./tasksvc.db", "sqlite:///./tasksvc.db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_sqlalchemy_url(monkeypatch: pytest.MonkeyPatch, url: str, expected: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings().sqlalchemy_url == expected


def test_postgres_scheme_alias_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/tasks")
    assert load_settings().sqlalchemy_url == "postgresql+psycopg://u:p@db/tasks"


# -- the CLI fails fast -----------------------------------------------------------------------


def one_stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["api", "worker"])
def test_cli_without_redis_url_exits_2_naming_it(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([command]) == 2
    line = one_stderr_line(capsys)
    assert "REDIS_URL" in line
    assert line.startswith("tasksvc: ")


@pytest.mark.parametrize("command", ["api", "worker"])
def test_cli_with_a_bad_value_exits_2_naming_it(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # valid, so the jitter ratio is the only problem
    monkeypatch.setenv("RETRY_JITTER_RATIO", "5")
    assert cli.main([command]) == 2
    line = one_stderr_line(capsys)
    assert "RETRY_JITTER_RATIO" in line
    assert "REDIS_URL" not in line


def test_cli_error_hides_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://user:{SECRET}@h/db")
    assert cli.main(["api"]) == 2
    line = one_stderr_line(capsys)
    assert "DATABASE_URL" in line
    assert SECRET not in line


@pytest.mark.parametrize("command", ["api", "worker", "migrate", "dev"])
def test_each_command_help_says_what_it_does_and_what_it_reads(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasksvc.cli import READS

    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for variable in READS[command]:
        assert variable.split(" ")[0] in out, variable
