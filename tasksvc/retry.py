"""The retry policy of SPEC section 4, as pure functions (the random source is injected).

After failed attempt n (1-based)::

    delay(n) = min(max_delay_s, base_delay_s * backoff ** (n - 1))
    wait(n)  = delay(n) * (1 - jitter_ratio * U),   U ~ Uniform[0, 1)

`jitter_ratio` = 0 is no jitter, 0.5 "equal jitter", 1 "full jitter" (AWS Architecture
Blog, "Exponential Backoff And Jitter"). So wait(n) lies in
`(delay(n) * (1 - jitter_ratio), delay(n)]`, never above the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RandomSource(Protocol):
    def random(self) -> float:
        """A float in [0, 1)."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 1.0
    backoff: float = 2.0
    jitter_ratio: float = 0.5
    max_delay_s: float = 300.0


def delay(n: int, policy: RetryPolicy) -> float:
    """The un-jittered delay after failed attempt `n` (1-based), capped at `max_delay_s`."""
    if n < 1:
        raise ValueError("attempt numbers start at 1")
    # Cap the exponent's growth before it overflows a float: past the cap the value is moot.
    exponent = n - 1
    try:
        raw = policy.base_delay_s * policy.backoff**exponent
    except OverflowError:
        return policy.max_delay_s
    return min(policy.max_delay_s, raw)


def wait(n: int, policy: RetryPolicy, rng: RandomSource) -> float:
    """Seconds to wait after failed attempt `n` before the next one (the formula above)."""
    return delay(n, policy) * (1.0 - policy.jitter_ratio * rng.random())


def should_retry(attempt: int, max_attempts: int, permanent: bool = False) -> bool:
    """True if failed attempt number `attempt` leaves another one to make."""
    return not permanent and attempt < max_attempts
