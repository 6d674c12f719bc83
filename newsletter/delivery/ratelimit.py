"""Sending pace: token buckets shared by every sending thread, and backoff for retries.

Clock and sleep are arguments so tests run on a fake clock and assert the exact waits.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    """Tokens refill at `rate` per second up to `capacity`; a reservation may go into debt."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def reserve(self, n: float, now: float) -> float:
        """Take `n` tokens now and return how long the taker must wait before using them.

        Taking before they exist (debt) queues callers fairly: each later caller waits for the
        debt of those before it, so threads never sleep holding the lock.
        """
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class RateLimiter:
    """At most `per_second` and `per_hour` messages (0 means no limit), across threads.

    `burst` is how many may go back to back after an idle spell; the default of 1 spaces
    messages evenly (one every 1/rate seconds), which is what providers' limits expect.
    """

    def __init__(
        self,
        per_second: float = 0,
        per_hour: float = 0,
        *,
        burst: float = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second < 0 or per_hour < 0:
            raise ValueError("rates cannot be negative")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        rates = [r for r in (per_second, per_hour / 3600.0) if r > 0]
        self._buckets = [_Bucket(rate, burst, burst, now) for rate in rates]
        self._paused_until = -math.inf
        self.per_second = per_second
        self.per_hour = per_hour

    @property
    def unlimited(self) -> bool:
        return not self._buckets

    def acquire(self, n: float = 1) -> float:
        """Block until `n` messages may go; return the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait, reserved = self._paused_until - now, False
                else:
                    wait = max((b.reserve(n, now) for b in self._buckets), default=0.0)
                    reserved = True
            if wait > 0:
                self._sleep(wait)
                waited += wait
            if not reserved:
                continue
            with self._lock:
                # A pause that began while we waited applies to us too; the reservation we
                # held is forfeit, which only errs on the slow side.
                if self._clock() < self._paused_until:
                    continue
            return waited

    def pause_until(self, t: float) -> None:
        """Let nobody acquire before `t` (on this limiter's clock), e.g. a server's Retry-After."""
        with self._lock:
            self._paused_until = max(self._paused_until, t)

    def pause_for(self, seconds: float) -> None:
        """`pause_until(now + seconds)`."""
        self.pause_until(self._clock() + seconds)

    @property
    def paused_until(self) -> float | None:
        with self._lock:
            return self._paused_until if self._paused_until > self._clock() else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff for retrying transient failures, capped, with jitter.

    Attempt 1 waits about `base`, each later one `factor` times longer, never more than `cap`.
    Jitter shortens each delay by a random fraction of up to `jitter`, so retries of many
    recipients deferred together do not all return in the same second.
    """

    base: float = 30.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry).

        A server's `retry_after` is a floor: the delay is never shorter than what it asked for.
        """
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        try:
            raw = self.base * self.factor ** (attempt - 1)
        except OverflowError:
            raw = self.cap
        capped = min(self.cap, raw)
        delay = capped * (1 - self.jitter * self.rng.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
