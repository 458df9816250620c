"""Every metric of SPEC section 12, defined once.

`Metrics(registry)` builds them on a registry of the caller's choosing: the API's own,
or prometheus_client's default one in worker processes, where multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `tasksvc worker` before any import of
prometheus_client) writes each process's values to files that the worker's /metrics
endpoint adds up, so a counter bumped in a child process never vanishes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        r = registry
        self.jobs_submitted = Counter("tasksvc_jobs_submitted", "Jobs accepted by POST /v1/jobs.", ["type"], registry=r)
        self.jobs_deduplicated = Counter(
            "tasksvc_jobs_deduplicated",
            "Submissions answered with an existing job (idempotent replay).",
            ["type"],
            registry=r,
        )
        self.jobs_rejected = Counter(
            "tasksvc_jobs_rejected",
            "Submissions refused (queue_full, backend_unavailable, ...).",
            ["reason"],
            registry=r,
        )
        self.job_attempts = Counter(
            "tasksvc_job_attempts",
            "Attempts by outcome (success|failure|timeout|worker_lost).",
            ["type", "outcome"],
            registry=r,
        )
        self.job_retries = Counter("tasksvc_job_retries", "Retries scheduled.", ["type"], registry=r)
        self.jobs_finished = Counter(
            "tasksvc_jobs_finished", "Jobs that reached a terminal status.", ["type", "status"], registry=r
        )
        self.compensations = Counter(
            "tasksvc_compensations",
            "Compensations by outcome (succeeded|failed|skipped).",
            ["type", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "tasksvc_job_duration_seconds",
            "Duration of one attempt.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.job_latency = Histogram(
            "tasksvc_job_latency_seconds",
            "From creation to a terminal status.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def prime(self, job_types: Iterable[str]) -> None:
        """Create every labelled series at 0, so the first event shows in rate() and increase()."""
        for reason in REJECT_REASONS:
            self.jobs_rejected.labels(reason)
        for t in job_types:
            for metric in (self.jobs_submitted, self.jobs_deduplicated, self.job_retries):
                metric.labels(t)
            for outcome in ATTEMPT_OUTCOMES:
                self.job_attempts.labels(t, outcome)
            for status in FINISHED_STATUSES:
                self.jobs_finished.labels(t, status)
            for outcome in COMPENSATION_OUTCOMES:
                self.compensations.labels(t, outcome)
            self.job_duration.labels(t)
            self.job_latency.labels(t)


REJECT_REASONS = ("queue_full", "backend_unavailable")
ATTEMPT_OUTCOMES = ("success", "failure", "timeout", "worker_lost")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
COMPENSATION_OUTCOMES = ("succeeded", "failed", "skipped")


class LiveGauges(Collector):
    """tasksvc_queue_depth, tasksvc_queue_capacity and tasksvc_workers, read at scrape time."""

    def __init__(self, depth: Callable[[], int], capacity: int, workers: Callable[[], int]) -> None:
        self.depth = depth
        self.capacity = capacity
        self.workers = workers

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "tasksvc_queue_depth",
            "Jobs waiting to run, including those waiting for a retry.",
            value=_or_nan(self.depth),
        )
        yield GaugeMetricFamily("tasksvc_queue_capacity", "QUEUE_MAX_SIZE.", value=self.capacity)
        yield GaugeMetricFamily("tasksvc_workers", "Worker processes registered with RQ.", value=_or_nan(self.workers))


def _or_nan(read: Callable[[], int]) -> float:
    try:
        return float(read())
    except Exception:  # a scrape must not fail because Redis blinked: NaN says "unknown"
        return math.nan
