"""Long-poll support for `GET /v1/jobs/{id}?wait=N`.

One Redis pub/sub connection per API process listens to every completion
(`tasksvc:done:*`, published by workers and by cancel) and wakes the requests waiting
for that job. A waiting request reads the database twice: once before it waits and once
when it is woken (or times out), so N waiting clients cost nothing while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from tasksvc.logs import FailureLog
from tasksvc.queue import DONE_CHANNEL_PREFIX

log = logging.getLogger("tasksvc.api")
_RECONNECT_S = 1.0
STOP_TIMEOUT_S = 2.0


class Waiters:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = FailureLog(log, "the completion listener (long-poll wake-ups)")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="tasksvc-waiters")

    async def stop(self) -> None:
        """Stop listening. Bounded: redis-py may swallow a cancellation inside its pub/sub calls."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)

    @contextlib.contextmanager
    def registered(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` finishes; registered before the caller's first read."""
        event = asyncio.Event()
        self.events[job_id].add(event)
        try:
            yield event
        finally:
            self.events[job_id].discard(event)
            if not self.events[job_id]:
                del self.events[job_id]

    async def _listen(self) -> None:
        while not self._stopping:
            client = AsyncRedis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(DONE_CHANNEL_PREFIX + "*")
                    self.ready.set()
                    self._failures.succeeded()
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            self._wake(message["channel"].decode().removeprefix(DONE_CHANNEL_PREFIX))
            except RedisError as exc:
                self._failures.failed(exc)
                self._wake_all()  # waiting requests re-read the database rather than miss a completion
                await asyncio.sleep(_RECONNECT_S)
            finally:
                self.ready.clear()
                await client.aclose()

    def _wake(self, job_id: str) -> None:
        for event in self.events.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self.events.values():
            for event in events:
                event.set()
