"""The pillar's light and buzzer: what the citizen sees after a press.

The node decides *which* pattern to show (see `edge_agent.panic`); a backend
only renders it. Patterns, in the order a press normally walks through them:

- ``idle``        nothing happening (LED off)
- ``sent``        press recorded on the node, not yet confirmed by the server
- ``delivered``   the server committed the press (application ack)
- ``help_coming`` an operator acknowledged / dispatched / is on scene
- ``fault``       the button is stuck (or another local fault)
- ``offline``     the uplink is down and an event is waiting to go out

Backends: `SimIndicator` records a timestamped history that tests assert on;
`GpioIndicator` drives a gpiozero LED (and optional buzzer) on real pins.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hardware.clock import Clock, SystemClock
from hardware.errors import BackendUnavailable

__all__ = [
    "BLINK_PATTERNS",
    "Blink",
    "GpioIndicator",
    "Indicator",
    "IndicatorChange",
    "Pattern",
    "SimIndicator",
]

logger = logging.getLogger(__name__)


class Pattern(str, Enum):
    """What the indicator is showing."""

    IDLE = "idle"
    SENT = "sent"
    DELIVERED = "delivered"
    HELP_COMING = "help_coming"
    FAULT = "fault"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Blink:
    """How a pattern looks on an LED: on/off times (0 off time = steady) and beeps."""

    on_s: float
    off_s: float
    beeps: int = 0


# Distinct rhythms so a citizen (and a technician) can tell states apart
# without a legend: fast = working on it, steady = received, slow = help.
BLINK_PATTERNS: dict[Pattern, Blink] = {
    Pattern.IDLE: Blink(on_s=0.0, off_s=1.0),
    Pattern.SENT: Blink(on_s=0.15, off_s=0.15, beeps=1),
    Pattern.DELIVERED: Blink(on_s=1.0, off_s=0.0),
    Pattern.HELP_COMING: Blink(on_s=1.0, off_s=1.0, beeps=3),
    Pattern.FAULT: Blink(on_s=0.1, off_s=1.9),
    Pattern.OFFLINE: Blink(on_s=0.5, off_s=1.5),
}


@dataclass(frozen=True)
class IndicatorChange:
    """One entry of a simulated indicator's history."""

    t: float
    pattern: Pattern


class Indicator(ABC):
    """Shows one `Pattern` at a time."""

    @property
    @abstractmethod
    def pattern(self) -> Pattern:
        """The pattern shown now."""

    @abstractmethod
    def show(self, pattern: Pattern) -> None:
        """Switch to `pattern` (showing the current one again is a no-op)."""

    @abstractmethod
    def close(self) -> None:
        """Turn everything off and release the pins."""


class SimIndicator(Indicator):
    """An indicator that records every change with the clock's time."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._pattern = Pattern.IDLE
        self.history: list[IndicatorChange] = [
            IndicatorChange(self._clock.monotonic(), self._pattern)
        ]
        self.closed = False

    @property
    def pattern(self) -> Pattern:
        return self._pattern

    @property
    def patterns(self) -> list[Pattern]:
        """Just the sequence of patterns shown, oldest first."""
        return [change.pattern for change in self.history]

    def show(self, pattern: Pattern) -> None:
        if pattern is self._pattern:
            return
        self._pattern = pattern
        self.history.append(IndicatorChange(self._clock.monotonic(), pattern))

    def close(self) -> None:
        self.closed = True


class GpioIndicator(Indicator):
    """An LED (and optionally an active buzzer) on GPIO pins, through gpiozero.

    gpiozero blinks in a background thread per output; that is fine on a real
    node (one agent per process). Simulated fleets use `SimIndicator`.
    """

    def __init__(
        self,
        *,
        led_pin: int | str,
        buzzer_pin: int | str | None = None,
        pin_factory: Any = None,
    ) -> None:
        try:
            from gpiozero import LED, Buzzer
        except ImportError as exc:  # pragma: no cover - gpiozero is a base dependency
            raise BackendUnavailable(f"gpiozero is not installed: {exc}") from exc
        try:
            self._led = LED(led_pin, pin_factory=pin_factory)
            self._buzzer = (
                Buzzer(buzzer_pin, pin_factory=pin_factory) if buzzer_pin is not None else None
            )
        except Exception as exc:
            raise BackendUnavailable(f"cannot open indicator pins: {exc}") from exc
        self._pattern = Pattern.IDLE
        self._render(Pattern.IDLE)

    @property
    def pattern(self) -> Pattern:
        return self._pattern

    @property
    def led(self) -> Any:
        """The gpiozero LED (tests read `led.is_lit`)."""
        return self._led

    def show(self, pattern: Pattern) -> None:
        if pattern is self._pattern:
            return
        self._pattern = pattern
        self._render(pattern)

    def _render(self, pattern: Pattern) -> None:
        blink = BLINK_PATTERNS[pattern]
        if blink.on_s <= 0:
            self._led.off()
        elif blink.off_s <= 0:
            self._led.on()
        else:
            self._led.blink(on_time=blink.on_s, off_time=blink.off_s, background=True)
        if self._buzzer is not None:
            if blink.beeps:
                self._buzzer.beep(on_time=0.1, off_time=0.1, n=blink.beeps, background=True)
            else:
                self._buzzer.off()

    def close(self) -> None:
        self._led.close()
        if self._buzzer is not None:
            self._buzzer.close()
