"""Simulated time that runs faster than real time, and sleeping on any clock.

A `ScaledClock` maps the machine's monotonic clock onto a simulated one that
starts at a chosen UTC date and runs `speed` times faster: at ``speed=10080``
a week passes in a minute. One instance is shared by every simulated site and
every agent's power loop in a fleet, so the whole fleet sees the same sun.

`sleep_on(clock, seconds)` sleeps `seconds` of *that clock's* time (every
`hardware.clock.Clock` knows how: for a `ScaledClock` it is ``seconds /
speed`` of real time). In a simulated fleet only the power and telemetry
loops run on the scaled clock; the panic path (debounce, hold, MQTT) keeps
the node's own clock, real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from hardware.clock import Clock, Timer

__all__ = ["ScaledClock", "sleep_on"]


class ScaledClock:
    """A `Clock` whose time runs `speed` times faster than the machine's."""

    def __init__(
        self,
        *,
        start: datetime,
        speed: float = 1.0,
        paused: bool = False,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.start = start.astimezone(timezone.utc)
        self.speed = float(speed)
        self._real0: float | None = None if paused else time.monotonic()

    @property
    def paused(self) -> bool:
        return self._real0 is None

    def restart(self) -> None:
        """(Re)start simulated time at `start` from now (a paused clock stays at `start`)."""
        self._real0 = time.monotonic()

    def elapsed(self) -> float:
        """Simulated seconds since `start` (0 while paused)."""
        if self._real0 is None:
            return 0.0
        return (time.monotonic() - self._real0) * self.speed

    def monotonic(self) -> float:
        return self.elapsed()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())

    def real_seconds(self, simulated: float) -> float:
        """How long `simulated` seconds of this clock take in real time."""
        return simulated / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay) / self.speed, callback)


async def sleep_on(clock: Clock, seconds: float) -> None:
    """Sleep `seconds` of `clock`'s time (`clock.sleep`; kept for callers that had no clock)."""
    await clock.sleep(seconds)
