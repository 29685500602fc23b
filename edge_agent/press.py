"""What a panic button's edges mean: debounce, hold-to-confirm, stuck detection.

`PressInterpreter` is pure: it is fed edges (``pressed``, time) and the
current time, and returns decisions. It does no I/O and never sleeps; the
agent calls `poll(now)` at `next_deadline()` (an asyncio timer) and on every
edge. Times are seconds on the hardware backend's monotonic clock.

Rules:

- **Debounce.** A new level counts once it has been stable for
  ``debounce_ms``; the change is dated at the edge that began that stable
  period (the last bounce), not when the timer fired. A glitch shorter
  than that is dropped, so EMI on a long cable does not dispatch a patrol.
- **Hold to confirm.** With ``hold_to_confirm_ms`` = 0 a press counts as soon
  as it is debounced; otherwise it must stay down that long (`Panic` is
  decided while the button is still held, so the light answers at once).
  Releasing earlier gives `PressTooShort`.
- **Stuck.** Held longer than ``stuck_after_s`` → exactly one `StuckRaised`;
  nothing more until the button is released, then one `StuckCleared`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = [
    "Decision",
    "Panic",
    "PressInterpreter",
    "PressTooShort",
    "StuckCleared",
    "StuckRaised",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panic:
    """A confirmed press: send a PanicEvent."""

    at: float
    held_ms: int


@dataclass(frozen=True)
class PressTooShort:
    """Released before hold-to-confirm; counted, not sent."""

    at: float
    held_ms: int


@dataclass(frozen=True)
class StuckRaised:
    """The button has been down longer than the stuck limit."""

    at: float
    held_s: float


@dataclass(frozen=True)
class StuckCleared:
    """A stuck button was finally released."""

    at: float
    held_s: float


Decision = Panic | PressTooShort | StuckRaised | StuckCleared


class PressInterpreter:
    """Turns raw edges into decisions; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        debounce_ms: int = 30,
        hold_to_confirm_ms: int = 0,
        stuck_after_s: float = 30.0,
        start: float = 0.0,
        pressed: bool = False,
    ) -> None:
        self.configure(
            debounce_ms=debounce_ms,
            hold_to_confirm_ms=hold_to_confirm_ms,
            stuck_after_s=stuck_after_s,
        )
        # Raw level as last reported, and since when.
        self._raw = pressed
        self._raw_since = start
        # Debounced level and the current press (if down).
        self._level = pressed
        self._down_since: float | None = start if pressed else None
        self._confirmed = False
        self._stuck = False
        self.glitches = 0

    def configure(self, *, debounce_ms: int, hold_to_confirm_ms: int, stuck_after_s: float) -> None:
        """Change the rules at run time (SetConfigCommand); applies to the next decision."""
        if debounce_ms < 0 or hold_to_confirm_ms < 0 or stuck_after_s <= 0:
            raise ValueError("debounce/hold must be >= 0 and stuck_after_s > 0")
        self.debounce_s = debounce_ms / 1000.0
        self.hold_s = hold_to_confirm_ms / 1000.0
        self.stuck_after_s = float(stuck_after_s)

    @property
    def pressed(self) -> bool:
        """The debounced level."""
        return self._level

    @property
    def stuck(self) -> bool:
        """True from `StuckRaised` until the release that clears it."""
        return self._stuck

    def edge(self, *, pressed: bool, at: float) -> list[Decision]:
        """Feed one raw edge; returns what became decided up to and at `at`."""
        decisions = self.poll(at)
        if pressed == self._raw:
            return decisions  # repeated level (a missed opposite edge); nothing new
        if pressed == self._level and at - self._raw_since < self.debounce_s:
            self.glitches += 1  # came back before the other level settled
        self._raw = pressed
        self._raw_since = at
        decisions.extend(self.poll(at))
        return decisions

    def poll(self, now: float) -> list[Decision]:
        """Everything that has become due by `now` (call at `next_deadline()`)."""
        decisions: list[Decision] = []
        if self._raw != self._level and now - self._raw_since >= self.debounce_s:
            self._settle(self._raw, self._raw_since, decisions)
        if self._level and self._down_since is not None:
            held = now - self._down_since
            if not self._confirmed and not self._stuck and held >= self.hold_s:
                self._confirmed = True
                decisions.append(
                    Panic(at=self._down_since + self.hold_s, held_ms=round(self.hold_s * 1000))
                )
            if not self._stuck and held >= self.stuck_after_s:
                self._stuck = True
                decisions.append(StuckRaised(at=self._down_since + self.stuck_after_s, held_s=held))
        return decisions

    def _settle(self, level: bool, at: float, decisions: list[Decision]) -> None:
        self._level = level
        if level:
            self._down_since = at
            self._confirmed = False
            return
        down_since = self._down_since if self._down_since is not None else at
        held = at - down_since
        self._down_since = None
        if self._stuck:
            self._stuck = False
            decisions.append(StuckCleared(at=at, held_s=held))
        elif not self._confirmed:
            # Released before hold-to-confirm: check it had not in fact been
            # held long enough (a late poll), else it was too short.
            if held >= self.hold_s:
                decisions.append(
                    Panic(at=down_since + self.hold_s, held_ms=round(self.hold_s * 1000))
                )
            else:
                decisions.append(PressTooShort(at=at, held_ms=round(held * 1000)))
        self._confirmed = False

    def next_deadline(self) -> float | None:
        """When `poll` may next decide something on its own, or None."""
        deadlines: list[float] = []
        if self._raw != self._level:
            deadlines.append(self._raw_since + self.debounce_s)
        elif self._level and self._down_since is not None and not self._stuck:
            if not self._confirmed:
                deadlines.append(self._down_since + self.hold_s)
            deadlines.append(self._down_since + self.stuck_after_s)
        return min(deadlines) if deadlines else None
