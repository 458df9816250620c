"""Settings: every variable of SPEC section 11, validated once at start and passed down.

Read from the environment and from `.env` in the working directory. Nothing else in the
package reads the environment: `Settings` is built by the CLI (or a test) and handed to
`create_app(settings)` / `run_worker(settings)`.
"""

from __future__ import annotations

import os
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from tasksvc.auth import ApiKey, parse_api_keys
from tasksvc.errors import ConfigError

_WEEK_S = 7 * 86_400


class Settings(BaseSettings):
    """The service's configuration; field `x_y` is read from the variable `X_Y`."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, allow_inf_nan=False, env_ignore_empty=True
    )

    database_url: SecretStr = SecretStr("sqlite:///./tasksvc.db")
    redis_url: SecretStr | None = None

    retry_max_attempts: int = Field(5, ge=1)
    retry_base_delay: float = Field(1.0, gt=0, le=_WEEK_S)
    retry_backoff: float = Field(2.0, ge=1)
    retry_jitter_ratio: float = Field(0.5, ge=0, le=1)
    retry_max_delay: float = Field(300.0, gt=0, le=_WEEK_S)
    retry_max_attempts_limit: int = Field(20, ge=1, le=1000)

    queue_max_size: int = Field(10_000, ge=1)
    job_timeout: float = Field(60.0, gt=0, le=_WEEK_S)
    worker_lost_timeout: float = Field(30.0, ge=1, le=_WEEK_S)
    idempotency_ttl: int = Field(86_400, ge=1, le=365 * 86_400)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    api_keys: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    reconcile_interval: float = Field(5.0, gt=0, le=3600)
    worker_metrics_port: int = Field(9100, ge=0, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        url = value.get_secret_value()
        if scheme == "postgres":
            url = "postgresql" + url[len("postgres") :]
        try:  # the URL may hold a password: our message never repeats it
            make_url(url).get_dialect()
        except (ValueError, ArgumentError, NoSuchModuleError):
            raise ValueError("is not a URL SQLAlchemy can use (check the port and the driver)") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())  # raises without repeating a secret
        return value

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """The parsed API_KEYS (empty: the API is open)."""
        return parse_api_keys(self.api_keys.get_secret_value()) if self.api_keys else ()

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.retry_max_delay < self.retry_base_delay:
            raise _field_error("retry_max_delay", "must be >= RETRY_BASE_DELAY")
        if self.retry_max_attempts > self.retry_max_attempts_limit:
            raise _field_error("retry_max_attempts", "must be <= RETRY_MAX_ATTEMPTS_LIMIT")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _field_error(field: str, message: str) -> _FieldError:
    return _FieldError(field, message)


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (and `.env`), or raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else _field_of(first.get("ctx", {}))
        raw = os.environ.get(field.upper())
        shown = "" if raw is None or field in _SECRET_FIELDS else f" (got {raw!r})"
        raise ConfigError(variable=field.upper(), reason=f"{_reason(first['msg'])}{shown}") from None


_SECRET_FIELDS = {"database_url", "redis_url", "api_keys"}


def _field_of(ctx: object) -> str:
    error = ctx.get("error") if isinstance(ctx, dict) else None
    return error.field if isinstance(error, _FieldError) else "configuration"


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")
