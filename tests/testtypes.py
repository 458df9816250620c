"""Job types that exist only in tests: slow, permanently failing, counting their compensations."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tasksvc.errors import PermanentError
from tasksvc.jobtypes import Registry, default_registry
from tasksvc.jobtypes.base import CompensationContext, JobType, Payload, RunContext


class ProbePayload(Payload):
    sleep_s: float = 0.0
    slow_attempts: int = 1000  # sleep only on the first k attempts
    fail_times: int = 0  # fail the first k attempts
    permanent: bool = False
    compensation_fails: bool = False


@dataclass
class Probe:
    """Records every call so tests can count runs and compensations."""

    runs: list[tuple[str, int]] = field(default_factory=list)
    compensations: list[str] = field(default_factory=list)

    def run(self, payload: ProbePayload, ctx: RunContext) -> dict[str, Any]:
        self.runs.append((str(ctx.job_id), ctx.attempt))
        if payload.sleep_s and ctx.attempt <= payload.slow_attempts:
            time.sleep(payload.sleep_s)
        if payload.permanent:
            raise PermanentError("this can never work")
        if ctx.attempt <= payload.fail_times:
            raise RuntimeError(f"probe failure {ctx.attempt}")
        return {"attempt": ctx.attempt}

    def compensate(self, payload: ProbePayload, ctx: CompensationContext) -> None:
        self.compensations.append(str(ctx.job_id))
        if payload.compensation_fails:
            raise RuntimeError("compensation failure")

    def job_type(self, timeout_s: float | None = None) -> JobType[ProbePayload]:
        return JobType("probe", ProbePayload, self.run, self.compensate, timeout_s=timeout_s)


def registry_with(*extra: JobType[Any]) -> Registry:
    registry = default_registry()
    registry.update({t.name: t for t in extra})
    return registry


def probe_registry() -> Registry:
    """For worker subprocesses (`Supervisor(job_types="tests.testtypes:probe_registry")`)."""
    return registry_with(Probe().job_type())
