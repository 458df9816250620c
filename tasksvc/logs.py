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
