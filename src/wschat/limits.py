"""Rate limits: a token bucket, and one bucket per user shared by their connections.

Imports: the standard library only (pure layer).

A per-connection bucket starts full on every connection, so a client that reconnects
gets a new burst each time, and one with many sockets gets one burst per socket.
:class:`UserRates` keeps one bucket per user instead, shared by all the user's
connections, and keeps it after the user's last connection ends until it has refilled:
only then is it the same as a new bucket, so forgetting it gives nothing away.

Memory: one entry per user with an open connection, plus one per user whose last
connection ended less than ``burst / rate`` seconds ago (2 s with the defaults).
Nothing is kept per user forever. Every operation is O(1) (amortized for the
expiry of idle entries, which runs on acquire and release, never per frame).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["RateBucket", "UserRates"]

Clock = Callable[[], float]
K = TypeVar("K", bound=Hashable)


class RateBucket:
    """A token bucket: ``rate`` tokens per second, up to ``burst`` at once; starts full.

    Attributes:
        rate: Tokens added per second.
        burst: The most tokens the bucket holds.
        level: Tokens in the bucket at ``last``.
        last: When ``level`` was computed, on ``clock``.
        holders: Connections sharing this bucket now (kept by :class:`UserRates`).
        idle_until: When an unheld bucket may be forgotten (kept by ``UserRates``).
    """

    __slots__ = ("burst", "clock", "holders", "idle_until", "last", "level", "rate")

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.level = float(burst)
        self.clock = clock
        self.last = clock()
        self.holders = 0
        self.idle_until = 0.0

    def take(self) -> bool:
        """Take one token: True if there was one, False if the bucket is empty."""
        now = self.clock()
        # An if, not min(): this runs for every frame, and the call costs more.
        level = self.level + (now - self.last) * self.rate
        if level > self.burst:
            level = self.burst
        self.last = now
        if level < 1.0:
            self.level = level
            return False
        self.level = level - 1.0
        return True


class UserRates(Generic[K]):
    """One :class:`RateBucket` per user, shared by all the user's connections.

    Call :meth:`acquire` when a connection starts and :meth:`release` when it ends;
    ``take()`` the bucket for each frame. A user's bucket outlives their last
    connection by ``burst / rate`` seconds, the time it takes to refill, so that
    reconnecting cannot refill it faster than waiting would.

    Example::

        rates = UserRates(100.0, 200)
        bucket = rates.acquire("alice")
        try:
            allowed = bucket.take()
        finally:
            rates.release("alice", bucket)
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        """Create an empty store.

        Args:
            rate: Frames per second a user may send on average.
            burst: Frames a user may send at once.
            clock: Seconds, monotonic (tests pass a frozen one).
        """
        self.rate = rate
        self.burst = burst
        self.clock = clock
        #: How long an unheld bucket is kept: the time to refill from empty.
        self.keep = burst / rate
        self._buckets: dict[K, RateBucket] = {}
        # Unheld buckets by the time they may go, oldest first. Every entry is made
        # ``keep`` seconds ahead of a monotonic clock, so the deque stays sorted.
        self._idle: deque[tuple[float, K, RateBucket]] = deque()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, user: K) -> RateBucket:
        """The user's bucket (a new full one if none is kept), held until release."""
        self._expire()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = RateBucket(self.rate, self.burst, self.clock)
        bucket.holders += 1
        return bucket

    def release(self, user: K, bucket: RateBucket) -> None:
        """One connection of ``user`` ended; keep the bucket until it has refilled."""
        bucket.holders -= 1
        if bucket.holders == 0:
            bucket.idle_until = until = self.clock() + self.keep
            self._idle.append((until, user, bucket))
        self._expire()

    def _expire(self) -> None:
        idle = self._idle
        if not idle:
            return
        now = self.clock()
        buckets = self._buckets
        while idle and idle[0][0] <= now:
            until, user, bucket = idle.popleft()
            # Held again, or released again later (a later entry decides), or
            # already replaced: this entry is stale.
            if (
                bucket.holders == 0
                and bucket.idle_until == until
                and buckets.get(user) is bucket
            ):
                del buckets[user]
