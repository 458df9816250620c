"""What every phase gets: sizes, backends, the process list, and the services it may start.

The services are the real commands: `tasksvc api` / `tasksvc worker` via
`sys.executable -m tasksvc.cli`, the baseline app under `python -m uvicorn`, and
`rq worker` for bare RQ. Each is a context manager: it is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Worker

from bench import baseline
from bench.backends import Backends
from bench.procs import Proc, Processes, free_port, wait_http, wait_until

TASKSVC = [sys.executable, "-m", "tasksvc.cli"]
TASKSVC_QUEUE = "tasksvc"  # tasksvc.queue.QUEUE_NAME
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sizes:
    connections: int = 32
    submit_s: float = 10.0  # per server, split in rounds
    submit_rounds: int = 2
    warmup_s: float = 2.0
    drain_jobs: int = 2000
    latency_jobs: int = 200
    retry_jobs: int = 100
    retry_rate: float = 10.0  # submissions per second: well under the workers' capacity (see README)
    rows_small: int = 10_000
    rows_big: int = 1_000_000  # SPEC section 13: "from 10k to 1M rows"; about 30 s of COPY here
    list_requests: int = 200
    admission_calls: int = 5000
    worker_processes: int = 2


QUICK = Sizes(
    submit_s=2.0,
    warmup_s=0.5,
    drain_jobs=200,
    latency_jobs=20,
    retry_jobs=20,
    retry_rate=20.0,
    rows_small=10_000,
    rows_big=20_000,
    list_requests=20,
    admission_calls=1000,
)


@dataclass(frozen=True)
class Api:
    proc: Proc
    port: int


@dataclass(frozen=True)
class Bench:
    backends: Backends
    procs: Processes
    sizes: Sizes
    loadgen: str

    @contextlib.contextmanager
    def tasksvc_api(self) -> Iterator[Api]:
        """`tasksvc api` with one uvicorn worker, ready (`/readyz` answers 200)."""
        port = free_port()
        argv = [*TASKSVC, "api", "--port", str(port), "--workers", "1"]
        with self.procs.running("tasksvc-api", argv, self.backends.child_env()) as proc:
            wait_http(proc, port, "/readyz", START_TIMEOUT_S)
            yield Api(proc, port)

    @contextlib.contextmanager
    def baseline_api(self) -> Iterator[Api]:
        """The baseline app under the same uvicorn, one worker, no access log (as `tasksvc api`)."""
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "bench.baseline:create_app", "--factory", "--port", str(port)]
        argv += ["--workers", "1", "--log-level", "warning", "--no-access-log"]
        with self.procs.running("baseline-api", argv, self.backends.child_env()) as proc:
            wait_http(proc, port, "/docs", START_TIMEOUT_S)
            yield Api(proc, port)

    @contextlib.contextmanager
    def tasksvc_worker(self, *, burst: bool = False, ready: bool = True) -> Iterator[Proc]:
        """`tasksvc worker --processes N`; `ready`: wait until its N processes are registered."""
        argv = [*TASKSVC, "worker", "--processes", str(self.sizes.worker_processes)]
        env = self.backends.child_env(WORKER_METRICS_PORT=str(free_port()))
        with self.procs.running("tasksvc-worker", [*argv, "--burst"] if burst else argv, env) as proc:
            if ready:
                self.wait_workers(TASKSVC_QUEUE, proc)
            yield proc

    @contextlib.contextmanager
    def rq_workers(self, *, burst: bool = False, ready: bool = True) -> Iterator[list[Proc]]:
        """N bare `rq worker -w rq.worker.SimpleWorker` processes on the baseline queue."""
        env = self.backends.child_env()
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(
                    self.procs.running(
                        f"rq-worker-{i}",
                        baseline.rq_worker_argv(self.backends.redis_url, f"bench-{i}", burst=burst),
                        env,
                        grace_s=1.0,  # RQ's pub/sub thread holds a warm shutdown for up to a minute
                    )
                )
                for i in range(self.sizes.worker_processes)
            ]
            if ready:
                self.wait_workers(baseline.QUEUE_NAME, *procs)
            yield procs

    def wait_workers(self, queue_name: str, *watch: Proc) -> None:
        """Until N RQ workers listen on `queue_name`."""
        with self.backends.redis() as redis:

            def registered() -> bool:
                return _workers_on(redis, queue_name) >= self.sizes.worker_processes

            wait_until(registered, timeout_s=START_TIMEOUT_S, what=f"workers on {queue_name!r}", watch=watch)


def _workers_on(redis: Redis, queue_name: str) -> int:
    return int(Worker.count(connection=redis, queue=Queue(queue_name, connection=redis)))
