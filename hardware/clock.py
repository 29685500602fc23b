"""Time as the hardware backend (and the agent) sees it: reading it and waiting on it.

Edges, indicator changes and press decisions are stamped with a `Clock`
instead of calling `time` directly, and every wait of the agent (debounce and
hold timers, resend and telemetry loops, power sampling) goes through the same
clock's `sleep` and `call_later`. So a test (or a simulated fleet) runs a whole
node on a `ManualClock` and asserts exact durations without sleeping: virtual
time moves only when the test calls `ManualClock.elapse`. Monotonic time
measures durations (debounce, hold, stuck); wall time (`now`) is only for the
`ts` fields that leave the node.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer"]

logger = logging.getLogger(__name__)


class Timer(Protocol):
    """A callback scheduled with `Clock.call_later`; `asyncio.TimerHandle` is one."""

    def cancel(self) -> None:
        """Do not run the callback (no effect once it has run)."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Where a backend and the agent get their time from, and how they wait on it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (durations only)."""
        ...

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (inside the running event loop)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` in the event loop after `delay` seconds of this clock's time."""
        ...


class SystemClock:
    """The real clocks of this machine; waits are the running loop's."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


@dataclass(order=True)
class _Scheduled:
    due: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to; for tests and simulated time.

    `advance` moves time and runs the timers that fell due, in order, each at
    its own instant. `elapse` does the same from inside the event loop and lets
    the woken coroutines run between timers, so loops that sleep again (a
    resend loop, a telemetry loop) see every interval they would in real time.
    """

    def __init__(self, *, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._t = start
        self._wall0 = wall or datetime(2024, 1, 1, tzinfo=timezone.utc)
        self._t0 = start
        self._timers: list[_Scheduled] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._t - self._t0)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        entry = _Scheduled(self._t + max(0.0, delay), next(self._order), callback)
        heapq.heappush(self._timers, entry)
        return entry

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    def next_due(self) -> float | None:
        """When the earliest pending timer is due (None when nothing waits)."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].due if self._timers else None

    def _run_due(self, until: float) -> bool:
        due = self.next_due()
        if due is None or due > until:
            return False
        entry = heapq.heappop(self._timers)
        self._t = max(self._t, entry.due)
        try:
            entry.callback()
        except Exception:
            logger.exception("manual clock: timer callback failed")
        return True

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (never backwards), run due timers, return the time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._t + seconds
        while self._run_due(target):
            pass
        self._t = target
        return self._t

    async def elapse(self, seconds: float, *, settle: int = 20) -> float:
        """`advance` from inside the loop, letting woken tasks run after each timer."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._t + seconds
        await _settle(settle)
        while self._run_due(target):
            await _settle(settle)
        self._t = target
        await _settle(settle)
        return self._t


async def _settle(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
