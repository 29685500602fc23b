"""Time as the hardware backend sees it.

Edges, indicator changes and press decisions are stamped with a `Clock`
instead of calling `time` directly, so a test (or a simulated fleet) can run
on a `ManualClock` and assert exact durations without sleeping. Monotonic
time measures durations (debounce, hold, stuck); wall time (`now`) is only
for the `ts` fields that leave the node.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Clock(Protocol):
    """Where a backend gets its time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (durations only)."""
        ...

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock:
    """A clock that moves only when told to; for tests and simulated time."""

    def __init__(self, *, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._t = start
        self._wall0 = wall or datetime(2024, 1, 1, tzinfo=timezone.utc)
        self._t0 = start

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._t - self._t0)

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._t += seconds
        return self._t
