"""The retry policy of SPEC section 4 as a pure function: a table with a reason per row, then properties.

delay(n) = min(max_delay_s, base_delay_s * backoff ** (n - 1))
wait(n)  = delay(n) * (1 - jitter_ratio * U),   U ~ Uniform[0, 1)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasksvc.retry import RetryPolicy, delay, should_retry, wait

PROPERTY = settings(max_examples=200, deadline=None)
JUST_BELOW_ONE = 1.0 - 2.0**-53  # the largest float random.random() can return


@dataclass
class FixedRandom:
    """A RandomSource whose U is chosen by the test."""

    u: float

    def random(self) -> float:
        return self.u


def policy(*, r: float = 0.5, base: float = 1.0, backoff: float = 2.0, cap: float = 300.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=5, base_delay_s=base, backoff=backoff, jitter_ratio=r, max_delay_s=cap)


# (n, policy, U, expected wait)
# fmt: off
WAIT_TABLE = [
    (1, policy(r=0), 0.7, 1.0),                       # first failed attempt waits the base delay; jitter 0 ignores U
    (2, policy(r=0), 0.7, 2.0),                       # growth by backoff: base * 2 ** 1
    (3, policy(r=0), 0.7, 4.0),                       # ... base * 2 ** 2
    (9, policy(r=0), 0.0, 256.0),                     # last step under the cap: 2 ** 8 = 256 < 300
    (10, policy(r=0), 0.0, 300.0),                    # cap at max delay: 2 ** 9 = 512 is clipped to 300
    (3, policy(r=0, base=0.1, backoff=3), 0.0, 0.9),  # another base and backoff: 0.1 * 3 ** 2
    (50, policy(r=0, backoff=1), 0.0, 1.0),           # backoff 1 is a constant delay
    (1, policy(r=0.5), 0.0, 1.0),                     # equal jitter, U = 0: the full delay (the upper bound is reached)
    (1, policy(r=0.5), 0.5, 0.75),                    # equal jitter, U = 0.5: delay * (1 - 0.25)
    (3, policy(r=0.5), 0.75, 2.5),                    # equal jitter on a grown delay: 4 * (1 - 0.375)
    (1, policy(r=0.5), JUST_BELOW_ONE, 0.5),          # equal jitter never goes below half the delay
    (2, policy(r=1), 0.0, 2.0),                       # full jitter, U = 0: the full delay
    (2, policy(r=1), 0.5, 1.0),                       # full jitter, U = 0.5: half the delay
    (2, policy(r=1), 0.999999, 2e-6),                 # full jitter, U near 1: wait near 0 (but not 0)
    (20, policy(r=0.5), 0.5, 225.0),                  # jitter applies after the cap: 300 * 0.75, under the cap
    (10_000, policy(r=0), 0.0, 300.0),                # huge n: 2.0 ** 9999 overflows a float; the cap is returned
    (10**9, policy(r=0.5), 0.5, 225.0),               # huge n with jitter: still capped, no OverflowError
    (10**9, policy(r=0, backoff=1), 0.0, 1.0),        # huge n with backoff 1 stays at base
]
# fmt: on


@pytest.mark.parametrize(("n", "retry_policy", "u", "expected"), WAIT_TABLE)
def test_wait_table(n: int, retry_policy: RetryPolicy, u: float, expected: float) -> None:
    assert wait(n, retry_policy, FixedRandom(u)) == pytest.approx(expected, rel=1e-9)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        delay(0, RetryPolicy())


def test_default_policy_matches_spec_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(
        max_attempts=5, base_delay_s=1.0, backoff=2.0, jitter_ratio=0.5, max_delay_s=300.0
    )


# -- properties -------------------------------------------------------------------------------

attempts = st.integers(min_value=1, max_value=2_000)
# Backoff 1 exactly, or clearly above 1: for backoff = 1 + 1 ulp, `backoff ** k` and `backoff ** (k + 1)`
# differ by less than pow's rounding error, so "non-decreasing" would test libm, not tasksvc.
backoffs = st.one_of(st.just(1.0), st.floats(min_value=1.01, max_value=10.0))
policies = st.builds(
    lambda base, backoff, r, cap_factor: RetryPolicy(
        max_attempts=5, base_delay_s=base, backoff=backoff, jitter_ratio=r, max_delay_s=base * cap_factor
    ),
    base=st.floats(min_value=1e-3, max_value=60.0),
    backoff=backoffs,
    r=st.floats(min_value=0.0, max_value=1.0),
    cap_factor=st.floats(min_value=1.0, max_value=1e4),
)
unit_interval = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@PROPERTY
@given(n=attempts, p=policies, u=unit_interval)
def test_wait_lies_between_jittered_floor_and_delay(n: int, p: RetryPolicy, u: float) -> None:
    d = delay(n, p)
    w = wait(n, p, FixedRandom(u))
    # Mathematically wait is in (d * (1 - r), d]. In floats, for U a hair below 1 (or a tiny r) the
    # product rounds onto the floor itself, so the exact bound checked here is the closed one ...
    assert d * (1 - p.jitter_ratio) <= w <= d
    # ... and the open lower bound is checked wherever the gap is far above float resolution.
    if p.jitter_ratio * (1 - u) > 1e-9:
        assert w > d * (1 - p.jitter_ratio)
    if u == 0.0:
        assert w == d


@PROPERTY
@given(n=attempts, p=policies, u=unit_interval)
def test_wait_never_exceeds_the_cap(n: int, p: RetryPolicy, u: float) -> None:
    assert 0 < wait(n, p, FixedRandom(u)) <= p.max_delay_s


@PROPERTY
@given(n=attempts, p=policies)
def test_delay_is_non_decreasing_in_n(n: int, p: RetryPolicy) -> None:
    assert delay(n, p) <= delay(n + 1, p)


@PROPERTY
@given(n=st.integers(min_value=1, max_value=10**12), p=policies)
def test_delay_is_finite_and_capped_for_any_n(n: int, p: RetryPolicy) -> None:
    assert p.base_delay_s <= delay(n, p) <= p.max_delay_s


@PROPERTY
@given(seed=st.integers(min_value=0, max_value=2**64), p=policies)
def test_same_seed_gives_same_waits(seed: int, p: RetryPolicy) -> None:
    first = random.Random(seed)
    second = random.Random(seed)
    assert [wait(n, p, first) for n in range(1, 30)] == [wait(n, p, second) for n in range(1, 30)]


@PROPERTY
@given(n=attempts, p=policies, seed=st.integers(min_value=0, max_value=2**32))
def test_jitter_zero_gives_exactly_the_delay(n: int, p: RetryPolicy, seed: int) -> None:
    p0 = replace(p, jitter_ratio=0.0)
    rng = random.Random(seed)
    assert all(wait(n, p0, rng) == delay(n, p0) for _ in range(20))


@PROPERTY
@given(n=st.integers(min_value=1, max_value=30), seed=st.integers(min_value=0, max_value=2**32))
def test_full_jitter_spans_the_whole_range(n: int, seed: int) -> None:
    p = RetryPolicy(jitter_ratio=1.0)
    d = delay(n, p)
    rng = random.Random(seed)
    waits = [wait(n, p, rng) for _ in range(500)]
    # P(no sample in the bottom or top tenth) = 0.9 ** 500, about 1e-23, for any seed.
    assert min(waits) < 0.1 * d
    assert max(waits) > 0.9 * d
    assert all(0 < w <= d for w in waits)


# -- should_retry -----------------------------------------------------------------------------


# (attempt, max_attempts, permanent, expected)
# fmt: off
SHOULD_RETRY_TABLE = [
    (1, 5, False, True),   # first failure of five: retry
    (4, 5, False, True),   # one attempt left: retry
    (5, 5, False, False),  # attempts exhausted: compensation, no retry
    (1, 1, False, False),  # RETRY_MAX_ATTEMPTS = 1 means no retry at all
    (1, 5, True, False),   # a permanent error is never retried, attempts left or not
    (6, 5, False, False),  # past the limit (a re-run after a lost worker): no retry
]
# fmt: on


@pytest.mark.parametrize(("attempt", "max_attempts", "permanent", "expected"), SHOULD_RETRY_TABLE)
def test_should_retry_table(attempt: int, max_attempts: int, permanent: bool, expected: bool) -> None:
    assert should_retry(attempt, max_attempts, permanent=permanent) is expected


@PROPERTY
@given(attempt=st.integers(min_value=1, max_value=100), max_attempts=st.integers(min_value=1, max_value=100))
def test_should_retry_iff_attempts_left(attempt: int, max_attempts: int) -> None:
    assert should_retry(attempt, max_attempts) is (attempt < max_attempts)
    assert should_retry(attempt, max_attempts, permanent=True) is False
