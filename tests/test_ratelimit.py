"""Rate limiter and backoff, on a fake clock: the exact waits are asserted."""

from __future__ import annotations

import random
import threading
import time
from typing import TypedDict

import pytest

from newsletter.delivery.ratelimit import Backoff, RateLimiter


class LimiterArgs(TypedDict, total=False):
    per_second: float
    per_hour: float
    burst: float


class BackoffArgs(TypedDict, total=False):
    base: float
    factor: float
    cap: float
    jitter: float


class FakeClock:
    """A clock that only moves when the code under test sleeps (or the test advances it)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, **kwargs: float) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep, **kwargs)


def test_unlimited_never_sleeps(clock: FakeClock) -> None:
    rl = limiter(clock)
    assert rl.unlimited
    assert [rl.acquire() for _ in range(1000)] == [0.0] * 1000
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("per_second", "per_hour", "interval"),
    [
        (4, 0, 0.25),
        (0, 7200, 0.5),  # 2 per second
        (10, 3600, 1.0),  # the hourly limit is the tighter one
        (2, 36000, 0.5),  # the per-second limit is the tighter one
    ],
)
def test_evenly_spaced(
    clock: FakeClock, per_second: float, per_hour: float, interval: float
) -> None:
    rl = limiter(clock, per_second=per_second, per_hour=per_hour)
    for _ in range(5):
        rl.acquire()
    assert clock.sleeps == pytest.approx([interval] * 4)
    assert clock.now == pytest.approx(100.0 + 4 * interval)


@pytest.mark.parametrize(("burst", "expected"), [(1, [0.25, 0.25, 0.25]), (3, [0.25])])
def test_idle_time_refills_only_up_to_the_burst(
    clock: FakeClock, burst: float, expected: list[float]
) -> None:
    rl = limiter(clock, per_second=4, burst=burst)
    rl.acquire()
    clock.now += 60  # a minute idle must not bank 240 messages
    for _ in range(4):
        rl.acquire()
    assert clock.sleeps == pytest.approx(expected)


def test_acquire_several_at_once(clock: FakeClock) -> None:
    rl = limiter(clock, per_second=2)
    assert rl.acquire(3) == pytest.approx(1.0)  # 1 token in hand, 2 more at 2/s
    assert rl.acquire() == pytest.approx(0.5)


def test_hourly_limit_over_many_messages(clock: FakeClock) -> None:
    rl = limiter(clock, per_second=50, per_hour=1800)
    for _ in range(31):
        rl.acquire()
    # 30 waits of 2 s: exactly 30 more messages after the first in one minute.
    assert clock.now - 100.0 == pytest.approx(60.0)


def test_pause_until_delays_everyone(clock: FakeClock) -> None:
    rl = limiter(clock, per_second=4)
    rl.pause_until(105.0)
    assert rl.paused_until == 105.0
    assert rl.acquire() == pytest.approx(5.0)
    rl.acquire()
    assert clock.sleeps == pytest.approx([5.0, 0.25])
    assert rl.paused_until is None


def test_earlier_pause_does_not_shorten_a_later_one(clock: FakeClock) -> None:
    rl = limiter(clock)
    rl.pause_until(110.0)
    rl.pause_until(103.0)
    rl.acquire()
    assert clock.sleeps == pytest.approx([10.0])


def test_pause_that_starts_while_waiting_applies(clock: FakeClock) -> None:
    rl = limiter(clock, per_second=4)
    rl.acquire()

    def sleep_and_get_paused(seconds: float) -> None:
        if not clock.sleeps:
            rl.pause_for(5.0)  # another thread heard Retry-After: 5 meanwhile
        clock.sleep(seconds)

    rl._sleep = sleep_and_get_paused
    assert rl.acquire() == pytest.approx(5.0)
    assert clock.sleeps == pytest.approx([0.25, 4.75])


def test_threads_get_distinct_slots() -> None:
    """With the clock stopped, every caller must be handed its own slot: 0, 1/r, 2/r, ..."""
    frozen = 50.0
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    rl = RateLimiter(per_second=100, clock=lambda: frozen, sleep=record)
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for _ in range(25):
            rl.acquire()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([k / 100 for k in range(1, 100)])


def test_real_clock_with_threads() -> None:
    rl = RateLimiter(per_second=200)
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [rl.acquire() for _ in range(10)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= 29 / 200 * 0.99


@pytest.mark.parametrize("kwargs", [{"per_second": -1}, {"per_hour": -5}, {"burst": 0.5}])
def test_limiter_rejects_nonsense(kwargs: LimiterArgs) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=30, factor=2, cap=300, jitter=0)
    assert [backoff.delay(a) for a in range(1, 7)] == [30, 60, 120, 240, 300, 300]


def test_backoff_jitter_is_drawn_from_the_given_random() -> None:
    backoff = Backoff(base=10, factor=3, cap=1000, jitter=0.5, rng=random.Random(7))
    same = random.Random(7)
    expected = [min(1000, 10 * 3 ** (a - 1)) * (1 - 0.5 * same.random()) for a in range(1, 9)]
    got = [backoff.delay(a) for a in range(1, 9)]
    assert got == pytest.approx(expected)
    for attempt, delay in enumerate(got, start=1):
        nominal = min(1000, 10 * 3 ** (attempt - 1))
        assert nominal / 2 <= delay <= nominal


def test_backoff_huge_attempt_is_capped_not_an_overflow() -> None:
    assert Backoff(base=1, cap=600, jitter=0).delay(100_000) == 600


@pytest.mark.parametrize(("retry_after", "expected"), [(None, 30.0), (5.0, 30.0), (90.0, 90.0)])
def test_backoff_honours_retry_after_as_a_floor(retry_after: float | None, expected: float) -> None:
    assert Backoff(base=30, jitter=0).delay(1, retry_after=retry_after) == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"factor": 0.5}, {"base": 10, "cap": 5}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_backoff_rejects_nonsense(kwargs: BackoffArgs) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_backoff_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().delay(0)
