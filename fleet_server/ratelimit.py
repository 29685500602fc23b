"""A small in-memory token-bucket rate limiter (per client address, per enrollment token).

In memory on purpose: it protects one server process from a node (or an
attacker) hammering `/api/v1/enroll`. With several server workers each keeps
its own buckets, so the effective limit is per worker; a shared limiter
(Redis, PostgreSQL) is the upgrade path once enrollment runs on more than one
process (docs/provisioning.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucketLimiter"]


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

    def allow(self, key: str) -> bool:
        """Take one token from `key`'s bucket; False when it is empty."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self._max_keys:
                self._prune(now)
            return allowed

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no information.
        full_after = self.burst / self.rate_per_s if self.rate_per_s > 0 else float("inf")
        for key, (_tokens, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]
