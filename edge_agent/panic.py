"""The panic component: button edges → press decisions → panic/tamper events, and the light.

Button edges (from gpiozero's thread on real pins, from the caller on mock
pins) are handed to the node's loop and fed to the pure `PressInterpreter`;
its timers (debounce, hold to confirm, stuck) run on the node's clock, so a
`ManualClock` drives them in tests. A confirmed press is written as a
`PanicEvent` through the node's outbox (marked ``test`` in commissioning test
mode); a stuck button raises one ``button_stuck`` `TamperEvent` and clears it
on release.

The light shows ``idle → sent → delivered → help_coming → idle``, or
``fault`` (stuck button) / ``offline`` (uplink down with events waiting);
the priority is in docs/edge-agent.md. The component answers the
``alert_state`` command (an operator acknowledged, dispatched, resolved) and
reports ``alert_active`` in the node state, which OTA reads to defer an
install. It is healthy while its button loop is alive and the button is not
stuck.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from edge_agent.component import CommandHandler, CommandRefused, Health, NodeContext, Signal
from edge_agent.config import PanicConfig
from edge_agent.press import (
    Decision,
    Panic,
    PressInterpreter,
    PressTooShort,
    StuckCleared,
    StuckRaised,
)
from hardware.button import Edge, PanicButton
from hardware.clock import Clock, Timer
from hardware.indicator import Indicator, Pattern
from proto.messages import (
    AlertStateCommand,
    Capability,
    CommandBase,
    EventBase,
    PanicEvent,
    TamperEvent,
)

__all__ = ["AlertPhase", "PanicComponent"]

logger = logging.getLogger(__name__)

# Alert states that mean someone is coming, and those that end the alert.
_HELP_STATES = frozenset({"acknowledged", "dispatched", "on_scene"})
_END_STATES = frozenset({"resolved", "closed", "false_alarm", "test", "duplicate"})
_TIMER_SLACK_S = 0.001  # a loop timer may fire up to its clock resolution early


class AlertPhase(str, Enum):
    """Where the node's latest panic press is, as far as the node knows."""

    NONE = "none"
    SENT = "sent"
    DELIVERED = "delivered"
    HELP_COMING = "help_coming"


class PanicComponent:
    """The panic button, its interpreter and the pillar's light; see the module docstring."""

    name = "panic"

    def __init__(
        self,
        *,
        button: PanicButton,
        indicator: Indicator,
        clock: Clock,
        config: PanicConfig,
        panic_pending: bool = False,
    ) -> None:
        self.button = button
        self.indicator = indicator
        self.clock = clock
        self.config = config
        self.interpreter = PressInterpreter(
            debounce_ms=config.debounce_ms,
            hold_to_confirm_ms=config.hold_to_confirm_ms,
            stuck_after_s=config.stuck_after_s,
            start=clock.monotonic(),
            pressed=button.is_pressed,
        )
        self.alert_phase = AlertPhase.SENT if panic_pending else AlertPhase.NONE
        self.last_panic_event_id: str | None = None
        self.panic_event_ids: list[str] = []
        self.running = False
        self._ctx: NodeContext | None = None
        self._timer: Timer | None = None

    # -------------------------------------------------------- component face

    @property
    def capabilities(self) -> Sequence[Capability]:
        return (Capability.PANIC_BUTTON, Capability.INDICATOR)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"alert_state": self._alert_state}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        if not self.running:
            return Health(False, "button loop not running")
        if self.interpreter.stuck:
            return Health(False, "button stuck")
        return Health(True, f"button loop alive, light {self.indicator.pattern.value}")

    async def run(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        ctx.subscribe(self._on_signal)
        self.button.set_callback(lambda edge: ctx.call_soon_threadsafe(lambda: self._on_edge(edge)))
        self.running = True
        self._publish_alert_state()
        self.refresh()
        try:
            await asyncio.Event().wait()  # edges and timers do the work
        finally:
            self.running = False
            self.button.set_callback(None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # ---------------------------------------------------------------- button

    def _on_edge(self, edge: Edge) -> None:
        if self._ctx is not None:
            self._ctx.counters["edges"] += 1
        self._apply(self.interpreter.edge(pressed=edge.pressed, at=edge.t))
        self._schedule()

    def tick(self) -> None:
        """Let the interpreter decide what is due now (its timer does this)."""
        self._timer = None
        self._apply(self.interpreter.poll(self.clock.monotonic()))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.interpreter.next_deadline()
        if deadline is None or not self.running:
            return
        delay = max(0.0, deadline - self.clock.monotonic()) + _TIMER_SLACK_S
        self._timer = self.clock.call_later(delay, self.tick)

    def _apply(self, decisions: list[Decision]) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        for decision in decisions:
            if isinstance(decision, Panic):
                self._on_panic(ctx, decision)
            elif isinstance(decision, PressTooShort):
                ctx.counters["presses_too_short"] += 1
                logger.info("%s: press too short (%d ms), not sent", ctx.node_id, decision.held_ms)
            elif isinstance(decision, StuckRaised):
                ctx.counters["button_stuck"] += 1
                logger.warning("%s: button stuck for %.0fs", ctx.node_id, decision.held_s)
                self._write_tamper(ctx, active=True, detail=f"held {decision.held_s:.0f}s")
            elif isinstance(decision, StuckCleared):
                logger.info("%s: stuck button released", ctx.node_id)
                detail = f"released after {decision.held_s:.0f}s"
                self._write_tamper(ctx, active=False, detail=detail)
        if decisions:
            self.refresh()

    def _on_panic(self, ctx: NodeContext, decision: Panic) -> None:
        ctx.counters["presses"] += 1
        test = ctx.state.test_mode
        button = self.config.button
        node_id = ctx.node_id
        clock = ctx.clock

        def build(event_id: str, seq: int) -> EventBase:
            return PanicEvent(
                node_id=node_id,
                ts=clock.now(),
                event_id=event_id,
                seq=seq,
                button=button,
                held_ms=decision.held_ms,
                test=test,
            )

        stored = ctx.write_event(build)
        if stored is not None:
            self.last_panic_event_id = stored.event_id
            self.panic_event_ids.append(stored.event_id)
        if self.alert_phase is not AlertPhase.HELP_COMING:
            self.alert_phase = AlertPhase.SENT
        self._publish_alert_state()
        logger.info(
            "%s: panic press recorded (event %s, test=%s)",
            node_id,
            stored.event_id if stored else "NOT STORED",
            test,
        )

    def _write_tamper(self, ctx: NodeContext, *, active: bool, detail: str) -> None:
        node_id = ctx.node_id
        clock = ctx.clock

        def build(event_id: str, seq: int) -> EventBase:
            return TamperEvent(
                node_id=node_id,
                ts=clock.now(),
                event_id=event_id,
                seq=seq,
                tamper="button_stuck",
                active=active,
                detail=detail,
            )

        ctx.write_event(build)

    # ------------------------------------------------------ node and server

    def _on_signal(self, signal: Signal) -> None:
        if signal.kind == "acked":
            ctx = self._ctx
            if (
                ctx is not None
                and self.alert_phase is AlertPhase.SENT
                and not ctx.state.panic_pending
            ):
                self.alert_phase = AlertPhase.DELIVERED
                self._publish_alert_state()
        elif signal.kind == "config" and self._ctx is not None:
            self.config = new = self._ctx.config.panic
            self.interpreter.configure(
                debounce_ms=new.debounce_ms,
                hold_to_confirm_ms=new.hold_to_confirm_ms,
                stuck_after_s=new.stuck_after_s,
            )
            self._schedule()
        self.refresh()

    def _alert_state(self, command: CommandBase) -> Mapping[str, Any]:
        if not isinstance(command, AlertStateCommand):
            raise CommandRefused(f"alert_state cannot take {type(command).__name__}")
        if command.state in _HELP_STATES:
            self.alert_phase = AlertPhase.HELP_COMING
        elif command.state in _END_STATES:
            self.alert_phase = AlertPhase.NONE
        self._publish_alert_state()
        self.refresh()
        return {"indicator": self.indicator.pattern.value}

    def _publish_alert_state(self) -> None:
        if self._ctx is not None:
            self._ctx.set_state(alert_active=self.alert_phase is not AlertPhase.NONE)

    # -------------------------------------------------------------- the light

    def desired_pattern(self) -> Pattern:
        """What the light should show now, from the node's state."""
        if self.interpreter.stuck:
            return Pattern.FAULT
        if self.alert_phase is AlertPhase.HELP_COMING:
            return Pattern.HELP_COMING
        ctx = self._ctx
        if ctx is not None and not ctx.state.connected and ctx.state.outbox_depth > 0:
            return Pattern.OFFLINE
        if self.alert_phase is AlertPhase.SENT:
            return Pattern.SENT
        if self.alert_phase is AlertPhase.DELIVERED:
            return Pattern.DELIVERED
        return Pattern.IDLE

    def refresh(self) -> None:
        pattern = self.desired_pattern()
        if pattern is not self.indicator.pattern:
            logger.debug("%s: indicator %s", self._ctx.node_id if self._ctx else "-", pattern.value)
            self.indicator.show(pattern)
