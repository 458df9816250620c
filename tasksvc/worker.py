"""`tasksvc worker`: N long-lived worker processes and the supervisor that keeps them.

Each worker process runs RQ's SimpleWorker (no fork per job: a fork costs ~20 ms, breaks
SQLAlchemy's pool and loses Prometheus counters) and a heartbeat thread that renews the
lease of the attempt it runs. The supervisor process starts them (spawned, so they share
nothing), restarts any that dies, and runs, always on:
- the promoter: moves due retries from the due set onto the queue, polling every
  PROMOTER_TICK_S (the retry scheduler's resolution);
- the reconciler (see `tasksvc.reconciler`), every RECONCILE_INTERVAL;
- `/metrics` on WORKER_METRICS_PORT, adding up every worker process's counters.
SIGTERM (or Ctrl-C): each worker finishes its current job, then everything exits.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from multiprocessing.context import SpawnProcess
from types import FrameType

from redis import Redis
from redis.exceptions import RedisError

from tasksvc import db, runner, store
from tasksvc.admission import QueueBound
from tasksvc.clock import utcnow
from tasksvc.config import Settings
from tasksvc.errors import ConfigError
from tasksvc.jobtypes import Registry, default_registry
from tasksvc.logs import FailureLog, configure_logging
from tasksvc.metrics import Metrics
from tasksvc.procs import die_with_parent
from tasksvc.queue import MessageQueue, connect, forget_worker, make_worker
from tasksvc.reconciler import reconcile
from tasksvc.retry import RetryPolicy

log = logging.getLogger("tasksvc.worker")
PROMOTER_TICK_S = 0.01
FAILING_TICK_S = 0.5
PROMOTER_IDLE_S = 0.1
SUPERVISE_TICK_S = 0.1
DEFAULT_JOB_TYPES = "tasksvc.jobtypes:default_registry"
RESTART_BACKOFF_S = 1.0


def policy_of(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        base_delay_s=settings.retry_base_delay,
        backoff=settings.retry_backoff,
        jitter_ratio=settings.retry_jitter_ratio,
        max_delay_s=settings.retry_max_delay,
    )


def build_context(settings: Settings, metrics: Metrics, registry: Registry | None = None) -> runner.WorkerContext:
    """Everything a worker process (or a test driving one in-process) needs."""
    redis = connect(settings.redis_url.get_secret_value() if settings.redis_url else "")
    return runner.WorkerContext(
        engine=db.make_engine(settings.sqlalchemy_url, pool_size=2),
        mq=MessageQueue(redis),
        bound=QueueBound(redis, settings.queue_max_size),
        registry=registry if registry is not None else default_registry(),
        metrics=metrics,
        policy=policy_of(settings),
        job_timeout_s=settings.job_timeout,
        worker_lost_timeout_s=settings.worker_lost_timeout,
        rng=random.Random(),
    )


# --- a worker process -------------------------------------------------------------------------


def load_registry(path: str) -> Registry:
    """The job types named by `module:function` (a function returning a Registry)."""
    module, _, function = path.partition(":")
    factory = getattr(importlib.import_module(module), function)
    registry: Registry = factory()
    return registry


def worker_process(settings: Settings, name: str, burst: bool, job_types: str = DEFAULT_JOB_TYPES) -> None:
    """Body of one worker process (spawned by the supervisor). An error ends it as a log line, not a traceback."""
    die_with_parent()
    configure_logging(settings)
    try:
        _work(settings, name, burst, job_types)
    except Exception:
        log.exception("worker process %s stopped on an error; the supervisor restarts it", name)
        sys.exit(1)


def _work(settings: Settings, name: str, burst: bool, job_types: str) -> None:
    ctx = build_context(settings, Metrics(), registry=load_registry(job_types))
    ctx.metrics.prime(ctx.registry)
    runner.bind(ctx)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(ctx, stop), name="lease-heartbeat", daemon=True).start()
    worker = make_worker(ctx.mq.redis, name=name)
    rq_level = logging.getLevelName(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    try:
        if burst:
            work_until_idle(ctx, functools.partial(worker.work, logging_level=rq_level))
        else:
            worker.work(logging_level=rq_level)
    finally:
        stop.set()
        ctx.engine.dispose()


def work_until_idle(ctx: runner.WorkerContext, work: Callable[..., bool]) -> None:
    """Work until no message waits and no retry is scheduled (promoting due retries as they come)."""
    while True:
        ctx.mq.promote_due()
        work(burst=True)
        wait = ctx.mq.next_due_in()
        if wait is None and ctx.mq.pending() == 0:
            return
        time.sleep(min(max(wait or 0.0, 0.0), PROMOTER_TICK_S * 5))


def _heartbeat(ctx: runner.WorkerContext, stop: threading.Event) -> None:
    """Renew the lease of whatever this process is running, 3 times per lease."""
    while not stop.wait(ctx.lease_s / 3):
        current = ctx.current
        if current is None:
            continue
        job_id, attempt, compensation = current
        try:
            with db.write(ctx.engine) as conn:
                store.renew_lease(conn, job_id, attempt=attempt, compensation=compensation, until=_lease_end(ctx))
        except Exception:  # the DB blinked; the next beat tries again, the lease has slack
            log.warning("lease renewal failed for %s", job_id, exc_info=True)


def _lease_end(ctx: runner.WorkerContext) -> datetime:
    return utcnow() + timedelta(seconds=ctx.lease_s)


# --- the supervisor ---------------------------------------------------------------------------


class Supervisor:
    def __init__(
        self, settings: Settings, processes: int, burst: bool = False, job_types: str = DEFAULT_JOB_TYPES
    ) -> None:
        self.settings = settings
        self.job_types = job_types
        self.processes = processes
        self.burst = burst
        self.children: dict[int, tuple[SpawnProcess, str]] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = threading.Event()
        self.mp = multiprocessing.get_context("spawn")
        self.guards = {name: StepGuard(name) for name in ("reconciler", "supervisor")}

    def start_child(self, index: int) -> None:
        name = f"tasksvc-{os.getpid()}-{index}-{random.randrange(1 << 30):x}"
        proc = self.mp.Process(
            target=worker_process,
            args=(self.settings, name, self.burst, self.job_types),
            name=f"worker-{index}",
            daemon=False,
        )
        proc.start()
        self.children[index] = (proc, name)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        ctx = build_context(self.settings, Metrics(), registry=load_registry(self.job_types))
        for i in range(self.processes):
            self.start_child(i)
        log.info("started %d worker processes", self.processes)
        promoter = threading.Thread(target=self._promote, args=(ctx.mq,), name="promoter", daemon=True)
        promoter.start()
        interval = min(self.settings.reconcile_interval, self.settings.worker_lost_timeout / 2)
        next_reconcile = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_reconcile:
                self.guards["reconciler"].run(lambda: reconcile(ctx, grace_s=interval))
                next_reconcile = now + interval
            if not self.guards["supervisor"].run(lambda: self._keep_children(ctx.mq.redis)):
                break
            self.stopping.wait(SUPERVISE_TICK_S)
        self.stopping.set()
        self._stop_children()
        promoter.join(timeout=5)
        ctx.engine.dispose()
        return 0

    def _promote(self, mq: MessageQueue) -> None:
        """The retry scheduler, in its own thread so that a slow reconciler pass never delays a retry.

        It moves due retries onto the queue, then sleeps until the next one is due, polling every
        PROMOTER_TICK_S at the finest. With nothing due soon it sleeps up to the shortest wait a new
        retry can have (RETRY_BASE_DELAY * (1 - RETRY_JITTER_RATIO), at most PROMOTER_IDLE_S): a
        retry scheduled meanwhile cannot come due before it wakes, so no retry starts late for it.
        """
        policy = policy_of(self.settings)
        idle_s = max(PROMOTER_TICK_S, min(PROMOTER_IDLE_S, policy.base_delay_s * (1 - policy.jitter_ratio)))
        failures = FailureLog(log, "promoter")
        while not self.stopping.is_set():
            try:
                mq.promote_due()
                due_in = mq.next_due_in()
            except Exception as exc:
                failures.failed(exc)
                pause = FAILING_TICK_S
            else:
                failures.succeeded()
                pause = idle_s if due_in is None else max(PROMOTER_TICK_S, min(idle_s, due_in))
            self.stopping.wait(pause)

    def _keep_children(self, redis: Redis) -> bool:
        """Restart dead children after RESTART_BACKOFF_S (not in burst mode); False once a burst is over."""
        now = time.monotonic()
        for index, (proc, name) in list(self.children.items()):
            if proc.is_alive():
                continue
            if index not in self.restart_at:
                log.warning("worker process %s exited with %s", proc.pid, proc.exitcode)
                self.restart_at[index] = now + RESTART_BACKOFF_S
                with contextlib.suppress(RedisError):  # it may have died without unregistering (SIGKILL)
                    forget_worker(redis, name)
            if self.burst:
                del self.children[index]
            elif now >= self.restart_at[index]:
                del self.restart_at[index]
                self.start_child(index)
        return bool(self.children) or not self.burst

    def _stop_children(self) -> None:
        for proc, _name in self.children.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc, _name in self.children.values():
            proc.join()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d: workers finish their current job, then exit", signum)
        self.stopping.set()


class StepGuard:
    """Runs a recurring step; a failing one is logged as FailureLog does, and the loop goes on."""

    def __init__(self, name: str) -> None:
        self.failures = FailureLog(log, name)

    def run(self, step: Callable[[], object]) -> bool:
        try:
            result = step()
        except Exception as exc:
            self.failures.failed(exc)
            return True  # keep going: the next tick tries again
        self.failures.succeeded()
        return result is not False


def serve_metrics(settings: Settings, host: str = "0.0.0.0") -> None:
    """`/metrics` on WORKER_METRICS_PORT: every worker process's counters, added up, and the gauges."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from tasksvc.metrics import LiveGauges
    from tasksvc.queue import worker_count

    redis = connect(settings.redis_url.get_secret_value() if settings.redis_url else "")
    bound = QueueBound(redis, settings.queue_max_size)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(LiveGauges(bound.depth, settings.queue_max_size, lambda: worker_count(redis)))
    try:
        start_http_server(settings.worker_metrics_port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            "WORKER_METRICS_PORT", f"cannot serve /metrics on port {settings.worker_metrics_port}: {exc.strerror}"
        ) from None
    log.info("worker metrics on %s:%d/metrics", host, settings.worker_metrics_port)
