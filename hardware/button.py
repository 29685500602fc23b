"""The panic button: timestamped press/release edges handed to a callback.

A button backend only reports edges; deciding what an edge *means* (bounce,
a confirmed press, a stuck button) is `edge_agent.press.PressInterpreter`'s
job, so that logic is pure and tested without hardware.

Backends:

- `GpioButton` wraps a gpiozero input on a real pin (or any pin factory).
- `SimButton` is the same `GpioButton` on a `gpiozero.pins.mock.MockFactory`
  pin; `press()` drives the mock pin low, so the real gpiozero code path runs
  in tests and simulated fleets. Each `SimButton` gets its own `MockFactory`
  unless one is passed, so thousands of nodes can use "pin 17" in one process.

Why `DigitalInputDevice` and not `gpiozero.Button`: `Button` is
`DigitalInputDevice` plus `HoldMixin`, whose only addition is `when_held`,
driven by one background thread per button. Hold and stuck detection live in
the pure interpreter instead, and a simulated fleet must not start a thread
per node. The pin set-up (`pull_up=True`, `bounce_time=None`: debouncing is
ours) and the edge path are exactly `Button`'s.

Threads: on real pins gpiozero calls back from its own thread; on mock pins
the callback runs in whoever drove the pin. Callbacks must therefore be
thread-safe (the agent hands edges to its event loop with
`call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.clock import Clock, ManualClock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError

__all__ = ["Edge", "EdgeCallback", "GpioButton", "PanicButton", "SimButton"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Edge:
    """One change of the button's level, stamped with the backend's clock."""

    pressed: bool
    t: float


EdgeCallback = Callable[[Edge], None]


class PanicButton(ABC):
    """A panic button input: reports press/release edges, nothing more."""

    name: str = "main"

    @abstractmethod
    def set_callback(self, callback: EdgeCallback | None) -> None:
        """Call `callback` with every edge from now on (None stops reporting)."""

    @property
    @abstractmethod
    def is_pressed(self) -> bool:
        """The level right now (True while held down)."""

    @property
    @abstractmethod
    def clock(self) -> Clock:
        """The clock edges are stamped with."""

    @abstractmethod
    def close(self) -> None:
        """Release the pin; no callbacks after this returns."""


class GpioButton(PanicButton):
    """A momentary switch to ground on a GPIO pin, read through gpiozero."""

    def __init__(
        self,
        *,
        pin: int | str,
        pin_factory: Any = None,
        clock: Clock | None = None,
        name: str = "main",
    ) -> None:
        try:
            from gpiozero import DigitalInputDevice
        except ImportError as exc:  # pragma: no cover - gpiozero is a base dependency
            raise BackendUnavailable(f"gpiozero is not installed: {exc}") from exc
        self.name = name
        self._clock = clock or SystemClock()
        self._callback: EdgeCallback | None = None
        try:
            self._device = DigitalInputDevice(
                pin, pull_up=True, bounce_time=None, pin_factory=pin_factory
            )
        except Exception as exc:  # gpiozero raises many unrelated types for "no GPIO here"
            raise BackendUnavailable(f"cannot open button on pin {pin!r}: {exc}") from exc
        self._device.when_activated = self._activated
        self._device.when_deactivated = self._deactivated

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def device(self) -> Any:
        """The underlying gpiozero device (for diagnostics)."""
        return self._device

    def set_callback(self, callback: EdgeCallback | None) -> None:
        self._callback = callback

    @property
    def is_pressed(self) -> bool:
        return bool(self._device.is_active)

    def _emit(self, pressed: bool) -> None:
        callback = self._callback
        if callback is None:
            return
        try:
            callback(Edge(pressed=pressed, t=self._clock.monotonic()))
        except Exception:
            # An edge handler bug must not kill gpiozero's callback thread.
            logger.exception("button %s edge callback failed", self.name)

    def _activated(self) -> None:
        self._emit(True)

    def _deactivated(self) -> None:
        self._emit(False)

    def close(self) -> None:
        self._callback = None
        self._device.close()


class SimButton(GpioButton):
    """A `GpioButton` on a mock pin that tests and simulators press."""

    def __init__(
        self,
        *,
        pin: int | str = 17,
        pin_factory: Any = None,
        clock: Clock | None = None,
        name: str = "main",
    ) -> None:
        if pin_factory is None:
            try:
                from gpiozero.pins.mock import MockFactory
            except ImportError as exc:  # pragma: no cover
                raise BackendUnavailable(f"gpiozero mock pins unavailable: {exc}") from exc
            pin_factory = MockFactory()
        self.pin_factory = pin_factory
        self.edges: list[Edge] = []
        super().__init__(pin=pin, pin_factory=pin_factory, clock=clock, name=name)

    @property
    def pin(self) -> Any:
        """The gpiozero `MockPin` under the button."""
        return self._device.pin

    def _emit(self, pressed: bool) -> None:
        self.edges.append(Edge(pressed=pressed, t=self._clock.monotonic()))
        super()._emit(pressed)

    def press(self) -> None:
        """Push the button: drive the mock pin to ground (active, pull-up wiring)."""
        if self._device.closed:
            raise HardwareError("button is closed")
        self.pin.drive_low()

    def release(self) -> None:
        """Let go: the pull-up takes the pin high again."""
        if self._device.closed:
            raise HardwareError("button is closed")
        self.pin.drive_high()

    async def hold(self, seconds: float) -> None:
        """Press, keep it down for `seconds`, release.

        On a `ManualClock` the clock is advanced instead of sleeping, so a
        simulated 30-second stuck button costs no real time.
        """
        self.press()
        try:
            if isinstance(self._clock, ManualClock):
                self._clock.advance(seconds)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(seconds)
        finally:
            self.release()
