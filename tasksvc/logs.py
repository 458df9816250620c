"""Logging: JSON lines (LOG_FORMAT=json) or text, with the job fields a log record carries."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from tasksvc.config import Settings

# Record attributes that are not extra fields; `color_message` is uvicorn's copy with terminal colours.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        return base + ("".join(f" {k}={v}" for k, v in extra.items()) if extra else "")


def configure_logging(settings: Settings) -> None:
    """Root logger (and RQ's, which does not propagate) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    assert handler.formatter is not None
    handler.formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    rq_logger = logging.getLogger("rq")
    rq_logger.handlers[:] = [handler]
    rq_logger.propagate = False
    rq_logger.setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


class FailureLog:
    """Logs a repeating failure once, then once per LOG_EVERY_S, and its recovery: a step retried
    every few milliseconds while Redis is down must not flood the log."""

    LOG_EVERY_S = 30.0

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0
        self.logged_at = 0.0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1:
            self.logger.warning("%s failed; retrying", self.what, exc_info=exc)
            self.logged_at = now
        elif now - self.logged_at >= self.LOG_EVERY_S:
            self.logger.warning("%s still failing (%d tries): %s", self.what, self.failures, type(exc).__name__)
            self.logged_at = now

    def succeeded(self) -> None:
        if self.failures:
            self.logger.warning("%s recovered after %d failed tries", self.what, self.failures)
            self.failures = 0
