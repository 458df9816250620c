"""Backpressure and in-flight idempotency keys, both in Redis (cheap enough for every submit).

QueueBound: `tasksvc:waiting` counts jobs waiting to run (queued, or waiting for a
retry). A submit takes a slot atomically (a Lua check-and-increment, so the bound holds
under any concurrency); a worker's claim gives it back; a retry takes one without asking
(retries already accepted are never refused). The database stays the truth: each
reconciler pass resets the counter to the number of waiting rows, which corrects any
drift (a process killed between its commit and its counter update, Redis restarted
empty). Slack: during a reset, submits in flight at that instant may be counted twice
or not at all, so the bound may be off by at most the number of concurrent submits,
for at most one RECONCILE_INTERVAL.

KeyLocks: while a request with an idempotency key is being recorded, a marker with a
short TTL holds the key; a second request with the same key meanwhile gets 409
`idempotency-key-in-use` (Stripe's and the IETF draft's behaviour). Uniqueness itself is
enforced by the database, not by this marker.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Final

from redis import Redis

WAITING_KEY: Final = "tasksvc:waiting"
DRAINED_PREFIX: Final = "tasksvc:drained:"  # + epoch second: claims in that second
DRAIN_WINDOW_S: Final = 10
NO_DRAIN_RETRY_AFTER_S: Final = 30
MAX_RETRY_AFTER_S: Final = 60
KEY_LOCK_TTL_MS: Final = 30_000

_TAKE_SLOT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return -1 end
return redis.call('INCR', KEYS[1])
"""
_RELEASE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class QueueBound:
    def __init__(self, redis: Redis, capacity: int) -> None:
        self.redis = redis
        self.capacity = capacity
        self._take = redis.register_script(_TAKE_SLOT)

    def try_admit(self) -> bool:
        """Take a slot for a new job; False at QUEUE_MAX_SIZE."""
        return int(self._take(keys=[WAITING_KEY], args=[self.capacity])) >= 0

    def release(self) -> None:
        """Give back a slot taken by a submit that recorded nothing, or by a cancelled job."""
        self.redis.decr(WAITING_KEY)

    def requeued(self) -> None:
        """A retry is waiting again: counted, never refused."""
        self.redis.incr(WAITING_KEY)

    def claimed(self, now_s: float | None = None) -> None:
        """A worker took a waiting job: its slot frees, and the drain rate counts it."""
        second = int(now_s if now_s is not None else time.time())
        pipe = self.redis.pipeline(transaction=False)
        pipe.decr(WAITING_KEY)
        pipe.incr(DRAINED_PREFIX + str(second))
        pipe.expire(DRAINED_PREFIX + str(second), DRAIN_WINDOW_S * 6)
        pipe.execute()

    def depth(self) -> int:
        return max(0, int(self.redis.get(WAITING_KEY) or 0))

    def reset(self, waiting: int) -> None:
        """Set the count from the database (the reconciler)."""
        self.redis.set(WAITING_KEY, waiting)

    def retry_after_s(self, now_s: float | None = None) -> int:
        """Whole seconds until a slot is likely free, from the claims of the last DRAIN_WINDOW_S."""
        now = int(now_s if now_s is not None else time.time())
        keys = [DRAINED_PREFIX + str(now - i) for i in range(1, DRAIN_WINDOW_S + 1)]
        drained = sum(int(v or 0) for v in self.redis.mget(keys))
        if drained == 0:
            return NO_DRAIN_RETRY_AFTER_S
        rate = drained / DRAIN_WINDOW_S
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(1 / rate)))


class KeyLocks:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._release = redis.register_script(_RELEASE_IF_OURS)

    @staticmethod
    def _name(scope: str, key: str) -> str:
        return "tasksvc:idem:" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()

    def acquire(self, scope: str, key: str) -> str | None:
        """A token if this request may record `key` now; None if another request is doing so."""
        token = secrets.token_hex(8)
        ok = self.redis.set(self._name(scope, key), token, nx=True, px=KEY_LOCK_TTL_MS)
        return token if ok else None

    def release(self, scope: str, key: str, token: str) -> None:
        self._release(keys=[self._name(scope, key)], args=[token])
