"""The job type registry: one module per type, registered here and nowhere else."""

from __future__ import annotations

from typing import Any

from tasksvc.jobtypes import block_ip, hash
from tasksvc.jobtypes.base import JobType

Registry = dict[str, JobType[Any]]


def default_registry() -> Registry:
    """Every built-in job type by name. A new type: one module, one entry here."""
    types: list[JobType[Any]] = [hash.JOB_TYPE, block_ip.JOB_TYPE]
    return {t.name: t for t in types}
