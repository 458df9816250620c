"""One root error; each subclass's docstring is its message, its data are attributes.

The HTTP mapping of these errors lives in one table in `tasksvc.api.problems`.
"""

from __future__ import annotations

from typing import Any


class TasksvcError(Exception):
    """tasksvc error."""

    def __init__(self, detail: str | None = None, **data: Any) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        for key, value in data.items():
            setattr(self, key, value)
        super().__init__(self.detail)


class ConfigError(TasksvcError):
    """Invalid configuration."""

    variable: str
    reason: str

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"invalid configuration: {variable}: {reason}", variable=variable, reason=reason)


class JobNotFound(TasksvcError):
    """No job with this id."""


class BlockedIpNotFound(TasksvcError):
    """This address is not blocked."""


class InvalidCursor(TasksvcError):
    """The cursor is not one this API returned."""


class UnknownJobType(TasksvcError):
    """Unknown job type."""

    job_type: str


class PayloadInvalid(TasksvcError):
    """The payload does not match the job type's schema."""

    errors: list[dict[str, Any]]


class Conflict(TasksvcError):
    """The job is not in a state that allows this."""


class IdempotencyKeyMismatch(TasksvcError):
    """This idempotency key was already used with a different request."""


class IdempotencyKeyInUse(TasksvcError):
    """A request with this idempotency key is still being recorded; retry shortly."""


class QueueFull(TasksvcError):
    """The queue is full; retry later."""

    retry_after_s: int


class BackendUnavailable(TasksvcError):
    """The database or Redis is unreachable; nothing was recorded."""

    retry_after_s: int


class PermanentError(TasksvcError):
    """A job failed in a way that retrying cannot fix: no retry, straight to compensation."""
