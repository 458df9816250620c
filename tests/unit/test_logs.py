"""FailureLog: a failure repeated every tick is logged once, then rarely, and its recovery once."""

from __future__ import annotations

import logging

import pytest

from tasksvc.logs import FailureLog


def test_a_repeating_failure_is_logged_once_then_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tasksvc.test")
    failures = FailureLog(logger, "the promoter")
    with caplog.at_level(logging.WARNING, logger="tasksvc.test"):
        for _ in range(500):  # five seconds of 10 ms ticks while Redis is down
            failures.failed(ConnectionError("refused"))
        failures.succeeded()
        failures.succeeded()  # nothing more to say
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert caplog.records[0].exc_info is not None  # the first one carries the traceback
    assert caplog.records[1].exc_info is None


def test_a_long_failure_is_reminded_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(logging.getLogger("tasksvc.test"), "the reconciler")
    with caplog.at_level(logging.WARNING, logger="tasksvc.test"):
        failures.failed(ConnectionError("refused"))
        failures.logged_at -= FailureLog.LOG_EVERY_S  # as if the interval had passed
        failures.failed(ConnectionError("refused"))
        failures.failed(ConnectionError("refused"))
    assert len(caplog.records) == 2
    assert "still failing (2 tries)" in caplog.records[1].getMessage()
