"""Small in-memory limiters: token buckets per key, and a gate that thins out repeated log lines.

`TokenBucketLimiter` protects one server process from a node (or an
attacker) hammering `/api/v1/enroll`, and from password guessing at
`/api/v1/login/access-token` (per account and per client address).
`LogGate` lets one WARNING through per key and interval and counts what it
held back, so a misbehaving node cannot fill the disk with one line per
rejected MQTT payload while the persisted counters keep the totals.

In memory on purpose: with several server workers each keeps its own
buckets, so the effective limit is per worker; a shared limiter (Redis,
PostgreSQL) is the upgrade path once these paths run on more than one
process (docs/provisioning.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["LogGate", "TokenBucketLimiter"]


class TokenBucketLimiter:
    """`per_minute` requests per key per minute, bursting up to `burst` (default the same)."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate_per_s)

    def allow(self, key: str) -> bool:
        """Take one token from `key`'s bucket; False when it is empty."""
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key, now)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self._max_keys:
                self._prune(now)
            return allowed

    def wait_s(self, key: str) -> float:
        """Seconds until `key`'s bucket holds a token again (0 when it holds one now).

        Looks without taking: the login route asks before it checks a
        password and spends a token only when the password was wrong.
        """
        now = self._clock()
        with self._lock:
            missing = 1.0 - self._tokens(key, now)
        if missing <= 0:
            return 0.0
        return math.inf if self.rate_per_s <= 0 else missing / self.rate_per_s

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no information.
        full_after = self.burst / self.rate_per_s if self.rate_per_s > 0 else float("inf")
        for key, (_tokens, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]


class LogGate:
    """One pass per key per `interval_s`; what it holds back is counted for the next pass.

    `admit(key, n)` answers None while the key's interval runs (the caller
    logs nothing) and, once it has passed, how many occurrences besides the
    one logged now went unlogged since the last pass (the caller's one line
    says so).
    """

    def __init__(
        self,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[Hashable, tuple[float, int]] = {}  # key → (last pass, held back)
        self._lock = threading.Lock()

    def admit(self, key: Hashable, n: int = 1) -> int | None:
        """Record `n` occurrences of `key`; None, or the unlogged others when one line may go."""
        now = self._clock()
        with self._lock:
            entry = self._keys.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                self._keys[key] = (entry[0], entry[1] + n)
                return None
            others = (entry[1] if entry is not None else 0) + n - 1
            self._keys[key] = (now, 0)
            if len(self._keys) > self._max_keys:
                self._prune(now)
            return others

    def _prune(self, now: float) -> None:
        # An expired key with nothing held back would pass anyway.
        for key, (last, held) in list(self._keys.items()):
            if now - last >= self.interval_s and held == 0:
                del self._keys[key]
