"""The node's agent: panic button → durable outbox → MQTT, and the pillar's light.

One `Agent` per node. Many agents share one asyncio loop (the simulator runs
thousands), so the agent never blocks for long, never starts a thread per
node and never calls `asyncio.run`: `await agent.run()` runs it until
`agent.stop()`. The behaviour is the "Edge node" section of
docs/panic-flow.md:

- button edges → `PressInterpreter` (pure) → decisions → events written to
  the `Outbox` (fsynced) → published QoS 1 → deleted on the server's `Ack`;
- on every connect: retained online `Status`, `Birth` (same ``bd_seq``),
  then the whole outbox in ``seq`` order; unacked events again after
  ``resend_after_s``;
- commands ``ping``, ``set_config``, ``test_mode``, ``alert_state``, each
  answered with a `Reply`; malformed downlink messages are counted and
  logged, never fatal;
- the indicator shows ``idle → sent → delivered → help_coming → idle``, or
  ``fault`` (stuck button) / ``offline`` (uplink down with events waiting).

For simulators: build with `Agent.from_dict(config_dict, backend=SimBackend())`
(or pass `button=`/`indicator=`), press with ``agent.button.press()``, read
``agent.indicator_history``, ``agent.last_panic_event_id`` and
``agent.counters``. Other event sources (the camera/ANPR pipeline once it
exists; today the simulator's synthetic scenes) write through the same
durable outbox with `Agent.record_event` and list what they add in
``agent.capabilities`` (sent in `Birth`); `add_ack_listener` reports which
events the server acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from enum import Enum
from importlib import metadata
from typing import Any

from edge_agent.config import (
    AgentConfig,
    ConfigError,
    apply_changes,
    config_from_dict,
    config_hash,
)
from edge_agent.errors import OutboxError
from edge_agent.mqtt import MqttTransport, TlsFiles, Transport, Will
from edge_agent.outbox import Outbox, StoredEvent
from edge_agent.power import PowerManager
from edge_agent.press import (
    Decision,
    Panic,
    PressInterpreter,
    PressTooShort,
    StuckCleared,
    StuckRaised,
)
from hardware.backends import HardwareBackend, load_backend
from hardware.button import Edge, PanicButton
from hardware.clock import Clock
from hardware.indicator import Indicator, IndicatorChange, Pattern, SimIndicator
from hardware.sim_clock import sleep_on
from proto.codec import decode, encode, topic_for
from proto.errors import BadTopic, ProtoError
from proto.ids import is_ulid
from proto.messages import (
    Ack,
    AlertStateCommand,
    Birth,
    Capability,
    CommandBase,
    EventBase,
    Firmware,
    PanicEvent,
    PingCommand,
    Reply,
    SetConfigCommand,
    Status,
    TamperEvent,
    Telemetry,
    TestModeCommand,
    WireModel,
)
from proto.topics import (
    Channel,
    birth_topic,
    downlink_filters,
    parse_topic,
    reply_topic,
    status_topic,
    telemetry_topic,
)

__all__ = ["AckListener", "Agent", "AlertPhase", "CommandRefused", "EventListener"]

logger = logging.getLogger(__name__)

EventListener = Callable[[StoredEvent], None]
AckListener = Callable[[list[str]], None]
TransportFactory = Callable[["Agent"], Transport]

# Alert states that mean someone is coming, and those that end the alert.
_HELP_STATES = frozenset({"acknowledged", "dispatched", "on_scene"})
_END_STATES = frozenset({"resolved", "closed", "false_alarm", "test", "duplicate"})
_TIMER_SLACK_S = 0.001  # asyncio may fire a timer up to its clock resolution early


class AlertPhase(str, Enum):
    """Where the node's latest panic press is, as far as the node knows."""

    NONE = "none"
    SENT = "sent"
    DELIVERED = "delivered"
    HELP_COMING = "help_coming"


class CommandRefused(Exception):
    """A command was understood but cannot be carried out; the reply says why."""


def _firmware_version() -> str:
    try:
        return metadata.version("nigehbaan")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class Agent:
    """The program one node runs; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        backend: HardwareBackend | None = None,
        button: PanicButton | None = None,
        indicator: Indicator | None = None,
        clock: Clock | None = None,
        transport_factory: TransportFactory | None = None,
        power: PowerManager | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self._owned: list[PanicButton | Indicator] = []
        if backend is None and (button is None or indicator is None):
            backend = load_backend(config.hardware.backend, clock=clock)
        self.hardware_name = backend.name if backend is not None else "custom"
        if button is None:
            assert backend is not None
            button = backend.button(pin=config.panic.pin, name=config.panic.button)
            self._owned.append(button)
        if indicator is None:
            assert backend is not None
            indicator = backend.indicator(
                led_pin=config.indicator.led_pin, buzzer_pin=config.indicator.buzzer_pin
            )
            self._owned.append(indicator)
        self.button = button
        self.indicator = indicator
        self.clock: Clock = clock or button.clock
        self.interpreter = PressInterpreter(
            debounce_ms=config.panic.debounce_ms,
            hold_to_confirm_ms=config.panic.hold_to_confirm_ms,
            stuck_after_s=config.panic.stuck_after_s,
            start=self.clock.monotonic(),
            pressed=button.is_pressed,
        )
        self.outbox = Outbox(
            config.data_dir / "outbox.sqlite3",
            max_events=config.outbox.max_events,
            synchronous=config.outbox.synchronous,
        )
        self.counters: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.last_panic_event_id: str | None = None
        self.panic_event_ids: list[str] = []
        self.alert_phase = AlertPhase.SENT if self.outbox.has_pending_panic() else AlertPhase.NONE
        self._listeners: list[EventListener] = []
        self._ack_listeners: list[AckListener] = []
        self._transport_factory = transport_factory or _mqtt_transport
        self.transport: Transport | None = None
        self._bd_seq = self.outbox.bd_seq
        self._test_mode = config.test_mode
        self._test_mode_until: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._started_at = 0.0
        self._press_timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Power runs on its own clock (simulated fleets speed it up); see edge_agent.power.
        self.power = power if power is not None else _power_manager(config, backend, self.clock)
        # Sent in Birth; an event source added to the node (cameras) appends to it.
        self.capabilities: list[Capability] = [Capability.PANIC_BUTTON, Capability.INDICATOR]
        if self.power is not None:
            self.capabilities.append(Capability.POWER_MONITOR)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        backend: HardwareBackend | None = None,
        button: PanicButton | None = None,
        indicator: Indicator | None = None,
        clock: Clock | None = None,
        transport_factory: TransportFactory | None = None,
        power: PowerManager | None = None,
    ) -> Agent:
        """An agent from a plain config dict (what simulators and tests use)."""
        return cls(
            config_from_dict(data),
            backend=backend,
            button=button,
            indicator=indicator,
            clock=clock,
            transport_factory=transport_factory,
            power=power,
        )

    # ------------------------------------------------------------ read-outs

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.connected

    @property
    def bd_seq(self) -> int:
        return self._bd_seq

    @property
    def outbox_depth(self) -> int:
        return self.outbox.depth

    @property
    def test_mode(self) -> bool:
        """True while presses are sent as test presses."""
        if (
            self._test_mode
            and self._test_mode_until is not None
            and self._now() >= self._test_mode_until
        ):
            self._test_mode = False
            self._test_mode_until = None
            logger.info("%s: test mode ended", self.node_id)
        return self._test_mode

    @property
    def indicator_history(self) -> list[IndicatorChange]:
        """The simulated indicator's history; only for `SimIndicator`."""
        if not isinstance(self.indicator, SimIndicator):
            raise TypeError("indicator history is only recorded by SimIndicator")
        return list(self.indicator.history)

    @property
    def uptime_s(self) -> float:
        return max(0.0, self._now() - self._started_at) if self._loop is not None else 0.0

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(stored_event)` after each event is written to the outbox."""
        self._listeners.append(listener)

    def add_ack_listener(self, listener: AckListener) -> None:
        """Call `listener(event_ids)` with the events each server `Ack` removed from the outbox."""
        self._ack_listeners.append(listener)

    def record_event(self, build: Callable[[str, int], EventBase]) -> StoredEvent | None:
        """Write an event to the durable outbox and publish it (any event source; loop thread).

        `build(event_id, seq)` makes the event; None when the outbox could not take it.
        """
        return self._write_event(build)

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until `stop()`; closes the outbox (and hardware it made) on the way out."""
        if self._closed:
            raise RuntimeError("an Agent runs once; make a new one")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        self._started_at = self._loop.time()
        transport = self._transport_factory(self)
        self.transport = transport
        for topic_filter in downlink_filters(self.node_id):
            transport.subscribe(topic_filter, qos=1)
        self.button.set_callback(self._edge_from_any_thread)
        self._refresh_indicator()
        transport_task = asyncio.ensure_future(transport.run())
        background = [
            asyncio.ensure_future(self._telemetry_loop()),
            asyncio.ensure_future(self._resend_loop()),
        ]
        if self.power is not None:
            power_loop = self.power.run(write=self._write_event, on_dark=self._power_dark)
            background.append(asyncio.ensure_future(power_loop))
        logger.info("%s: agent running (hardware %s)", self.node_id, self.hardware_name)
        try:
            await self._stop_event.wait()
        finally:
            self.button.set_callback(None)
            if self._press_timer is not None:
                self._press_timer.cancel()
            for task in background:
                task.cancel()
            transport.stop()
            try:
                await asyncio.wait_for(asyncio.shield(transport_task), 3.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                transport_task.cancel()
            except Exception:
                logger.exception("%s: transport ended with an error", self.node_id)
            for task in [*background, transport_task]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.close()
            logger.info("%s: agent stopped", self.node_id)

    def stop(self) -> None:
        """Ask `run()` to finish (from the loop thread or any other)."""
        self._stop_requested = True
        if self._loop is not None and self._stop_event is not None:
            self._in_loop(self._stop_event.set)

    def close(self) -> None:
        """Close the outbox and any hardware the agent created itself."""
        if self._closed:
            return
        self._closed = True
        self.outbox.close()
        for device in self._owned:
            device.close()

    def _in_loop(self, fn: Callable[[], None]) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    # ---------------------------------------------------------------- button

    def _edge_from_any_thread(self, edge: Edge) -> None:
        # Real GPIO calls back from gpiozero's thread; mock pins from the caller.
        self._in_loop(lambda: self._on_edge(edge))

    def _on_edge(self, edge: Edge) -> None:
        self.counters["edges"] += 1
        self._apply(self.interpreter.edge(pressed=edge.pressed, at=edge.t))
        self._schedule_press_timer()

    def tick(self) -> None:
        """Let the interpreter decide what is due now (timers do this; for simulated time)."""
        self._apply(self.interpreter.poll(self.clock.monotonic()))
        self._schedule_press_timer()

    def _schedule_press_timer(self) -> None:
        if self._press_timer is not None:
            self._press_timer.cancel()
            self._press_timer = None
        deadline = self.interpreter.next_deadline()
        if deadline is None or self._loop is None:
            return
        delay = max(0.0, deadline - self.clock.monotonic()) + _TIMER_SLACK_S
        self._press_timer = self._loop.call_later(delay, self.tick)

    def _apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Panic):
                self._on_panic(decision)
            elif isinstance(decision, PressTooShort):
                self.counters["presses_too_short"] += 1
                logger.info("%s: press too short (%d ms), not sent", self.node_id, decision.held_ms)
            elif isinstance(decision, StuckRaised):
                self.counters["button_stuck"] += 1
                logger.warning("%s: button stuck for %.0fs", self.node_id, decision.held_s)
                self._write_tamper(active=True, detail=f"held {decision.held_s:.0f}s")
            elif isinstance(decision, StuckCleared):
                logger.info("%s: stuck button released", self.node_id)
                self._write_tamper(active=False, detail=f"released after {decision.held_s:.0f}s")
        if decisions:
            self._refresh_indicator()

    def _on_panic(self, decision: Panic) -> None:
        self.counters["presses"] += 1
        test = self.test_mode
        button = self.config.panic.button

        def build(event_id: str, seq: int) -> EventBase:
            return PanicEvent(
                node_id=self.node_id,
                ts=self.clock.now(),
                event_id=event_id,
                seq=seq,
                button=button,
                held_ms=decision.held_ms,
                test=test,
            )

        stored = self._write_event(build)
        if stored is not None:
            self.last_panic_event_id = stored.event_id
            self.panic_event_ids.append(stored.event_id)
        if self.alert_phase is not AlertPhase.HELP_COMING:
            self.alert_phase = AlertPhase.SENT
        logger.info(
            "%s: panic press recorded (event %s, test=%s)",
            self.node_id,
            stored.event_id if stored else "NOT STORED",
            test,
        )

    def _write_tamper(self, *, active: bool, detail: str) -> None:
        def build(event_id: str, seq: int) -> EventBase:
            return TamperEvent(
                node_id=self.node_id,
                ts=self.clock.now(),
                event_id=event_id,
                seq=seq,
                tamper="button_stuck",
                active=active,
                detail=detail,
            )

        self._write_event(build)

    # ---------------------------------------------------------------- outbox

    def _write_event(self, build: Callable[[str, int], EventBase]) -> StoredEvent | None:
        try:
            stored = self.outbox.append(build)
        except OutboxError:
            # Disk trouble must not silence a press: report it loudly. The
            # event is not sent without its durable copy (no seq to give it);
            # the node_fault path for this is not built yet.
            self.counters["outbox_errors"] += 1
            logger.critical("%s: cannot write event to the outbox", self.node_id, exc_info=True)
            return None
        self.counters["events_written"] += 1
        self._publish_events([stored])
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:
                logger.exception("%s: event listener failed", self.node_id)
        return stored

    def _publish_events(self, events: list[StoredEvent]) -> None:
        if self.transport is None or not self.transport.connected:
            return
        published: list[str] = []
        for stored in events:
            if self.transport.publish(stored.topic, stored.payload, qos=1):
                published.append(stored.event_id)
        self.outbox.mark_published(published, at=self._now())
        self.counters["events_published"] += len(published)

    async def _resend_loop(self) -> None:
        """Re-publish events whose ack has not come within resend_after_s."""
        while True:
            resend_after = self.config.outbox.resend_after_s
            await asyncio.sleep(min(1.0, resend_after / 2))
            if not self.connected or self.outbox.depth == 0:
                continue  # nothing to resend: no query (a fleet runs this for every node)
            due = self.outbox.due(now=self._now(), resend_after_s=resend_after)
            if due:
                self.counters["resends"] += len(due)
                logger.info("%s: re-sending %d unacked events", self.node_id, len(due))
                self._publish_events(due)

    # ------------------------------------------------------------- transport

    def _will(self) -> Will:
        # bd_seq increments (durably) on every connect attempt.
        self._bd_seq = self.outbox.next_bd_seq()
        status = Status(
            node_id=self.node_id, ts=self.clock.now(), state="offline", bd_seq=self._bd_seq
        )
        return Will(topic=status_topic(self.node_id), payload=encode(status), qos=1, retain=True)

    def _on_connect(self, session_present: bool) -> None:
        transport = self.transport
        assert transport is not None
        now = self.clock.now()
        online = Status(node_id=self.node_id, ts=now, state="online", bd_seq=self._bd_seq)
        transport.publish(status_topic(self.node_id), encode(online), qos=1, retain=True)
        transport.publish(birth_topic(self.node_id), encode(self._birth()), qos=1)
        self.outbox.forget_published()
        pending = self.outbox.pending()
        if pending:
            logger.info("%s: connected; sending %d waiting events", self.node_id, len(pending))
            self._publish_events(pending)
        self._refresh_indicator()

    def _on_disconnect(self) -> None:
        self._refresh_indicator()

    def _birth(self) -> Birth:
        return Birth(
            node_id=self.node_id,
            ts=self.clock.now(),
            bd_seq=self._bd_seq,
            serial=self.config.serial,
            hardware=self.hardware_name,
            firmware=Firmware(version=_firmware_version()),
            capabilities=list(self.capabilities),
            config_hash=config_hash(self.config),
            site_id=self.config.site_id,
            district=self.config.district,
            last_seq=self.outbox.last_seq,
            location=self.config.location,
        )

    async def _power_dark(self) -> None:
        """The last power step: give the final power event a moment to be acked, then stop."""
        self.counters["power_dark"] += 1
        for _ in range(20):
            if self.outbox.depth == 0 or not self.connected:
                break
            await asyncio.sleep(0.05)
        self.stop()

    async def _telemetry_loop(self) -> None:
        # The first report comes at a random point of the first interval:
        # nodes started together (a simulated fleet, a district's power coming
        # back) must not all report in the same instant, every interval.
        delay = random.uniform(0.0, self.config.telemetry.interval_s)
        while True:
            # Telemetry follows the power clock (simulated time in a sped-up fleet).
            await sleep_on(self.power.clock if self.power else self.clock, delay)
            delay = self.config.telemetry.interval_s
            if self.transport is None or not self.transport.connected:
                continue
            report = Telemetry(
                node_id=self.node_id,
                ts=(self.power.clock if self.power else self.clock).now(),
                uptime_s=self.uptime_s,
                outbox_depth=self.outbox.depth,
                test_mode=self.test_mode,
                power=self.power.telemetry() if self.power else None,
            )
            self.transport.publish(telemetry_topic(self.node_id), encode(report), qos=0)
            self.counters["telemetry"] += 1

    # --------------------------------------------------------------- inbound

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
            if parsed.node_id != self.node_id:
                raise BadTopic(f"message for {parsed.node_id!r} on {self.node_id!r}")
            message = decode(parsed, payload)
        except ProtoError as exc:
            self._reject(topic, payload, exc)
            return
        if isinstance(message, Ack):
            self._on_ack(message)
        elif isinstance(message, CommandBase):
            self._on_command(message)
        else:
            self._reject(topic, payload, BadTopic(f"not a downlink message: {topic}"))

    def _reject(self, topic: str, payload: bytes, exc: ProtoError) -> None:
        self.counters["rejected"] += 1
        self.rejections[exc.reason] += 1
        logger.warning("%s: rejected message on %s (%s): %s", self.node_id, topic, exc.reason, exc)
        # A command we cannot read still gets an answer when its request id is readable.
        request_id = _request_id_of(topic, payload, self.node_id)
        if request_id is not None:
            self._reply(request_id, ok=False, error=f"rejected ({exc.reason}): {exc}"[:1000])

    def _on_ack(self, ack: Ack) -> None:
        acked = self.outbox.ack(ack.event_ids)
        self.counters["acked"] += len(acked)
        self.counters["acks"] += 1
        if acked:
            for listener in self._ack_listeners:
                try:
                    listener(acked)
                except Exception:
                    logger.exception("%s: ack listener failed", self.node_id)
        if self.alert_phase is AlertPhase.SENT and not self.outbox.has_pending_panic():
            self.alert_phase = AlertPhase.DELIVERED
        self._refresh_indicator()

    def _on_command(self, command: CommandBase) -> None:
        self.counters["commands"] += 1
        if command.expires_at is not None and command.expires_at < self.clock.now():
            self.counters["commands_expired"] += 1
            self._reply(command.request_id, ok=False, error="expired")
            return
        try:
            result = self._execute(command)
        except CommandRefused as exc:
            self.counters["commands_refused"] += 1
            self._reply(command.request_id, ok=False, error=str(exc)[:1000])
            return
        except Exception:
            logger.exception("%s: command %s failed", self.node_id, command.request_id)
            self._reply(command.request_id, ok=False, error="internal error on the node")
            return
        self._reply(command.request_id, ok=True, result=result)

    def _execute(self, command: CommandBase) -> dict[str, Any]:
        if isinstance(command, PingCommand):
            return {
                "uptime_s": round(self.uptime_s, 3),
                "outbox_depth": self.outbox.depth,
                "bd_seq": self._bd_seq,
                "last_seq": self.outbox.last_seq,
                "test_mode": self.test_mode,
            }
        if isinstance(command, SetConfigCommand):
            return self._set_config(command.changes)
        if isinstance(command, TestModeCommand):
            self._test_mode = command.enabled
            self._test_mode_until = self._now() + command.duration_s if command.enabled else None
            logger.info("%s: test mode %s", self.node_id, "on" if command.enabled else "off")
            return {"test_mode": command.enabled, "duration_s": command.duration_s}
        if isinstance(command, AlertStateCommand):
            if command.state in _HELP_STATES:
                self.alert_phase = AlertPhase.HELP_COMING
            elif command.state in _END_STATES:
                self.alert_phase = AlertPhase.NONE
            self._refresh_indicator()
            return {"indicator": self.indicator.pattern.value}
        raise CommandRefused(f"unknown command {type(command).__name__}")

    def _set_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        try:
            new = apply_changes(self.config, changes)
        except ConfigError as exc:
            raise CommandRefused(str(exc)) from exc
        self.config = new
        self.interpreter.configure(
            debounce_ms=new.panic.debounce_ms,
            hold_to_confirm_ms=new.panic.hold_to_confirm_ms,
            stuck_after_s=new.panic.stuck_after_s,
        )
        self._schedule_press_timer()
        logger.info("%s: config changed: %s", self.node_id, dict(changes))
        return {"applied": dict(changes), "config_hash": config_hash(new)}

    def _reply(
        self,
        request_id: str,
        *,
        ok: bool,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        reply = Reply(
            node_id=self.node_id,
            ts=self.clock.now(),
            request_id=request_id,
            ok=ok,
            result=result,
            error=error,
        )
        self._publish_message(reply)
        self.counters["replies"] += 1

    def _publish_message(self, message: WireModel, *, qos: int = 1) -> bool:
        if self.transport is None:
            return False
        return self.transport.publish(topic_for(message), encode(message), qos=qos)

    # -------------------------------------------------------------- indicator

    def desired_pattern(self) -> Pattern:
        """What the light should show now, from the node's state."""
        if self.interpreter.stuck:
            return Pattern.FAULT
        if self.alert_phase is AlertPhase.HELP_COMING:
            return Pattern.HELP_COMING
        if not self.connected and self.outbox.depth > 0:
            return Pattern.OFFLINE
        if self.alert_phase is AlertPhase.SENT:
            return Pattern.SENT
        if self.alert_phase is AlertPhase.DELIVERED:
            return Pattern.DELIVERED
        return Pattern.IDLE

    def _refresh_indicator(self) -> None:
        pattern = self.desired_pattern()
        if pattern is not self.indicator.pattern:
            logger.debug("%s: indicator %s", self.node_id, pattern.value)
            self.indicator.show(pattern)


def _request_id_of(topic: str, payload: bytes, node_id: str) -> str | None:
    """The request id of an unreadable command, if one can be found safely."""
    try:
        parsed = parse_topic(topic)
    except ProtoError:
        return None
    if parsed.channel is not Channel.CMD or parsed.node_id != node_id:
        return None
    try:
        data = json.loads(payload) if len(payload) <= 16 * 1024 else None
    except ValueError:
        return None
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not is_ulid(request_id):
        return None
    try:
        reply_topic(node_id, request_id)
    except ProtoError:
        return None
    return request_id


def _power_manager(
    config: AgentConfig, backend: HardwareBackend | None, clock: Clock
) -> PowerManager | None:
    """The power manager `config.power` asks for, on `backend`'s monitor (None when off)."""
    if not config.power.enabled:
        return None
    from hardware.power import load_power_monitor

    options = config.power.monitor_options
    if backend is not None:
        monitor = backend.power_monitor(kind=config.power.monitor, options=options)
    else:
        monitor = load_power_monitor(config.power.monitor or "sim", clock=clock, options=options)
    return PowerManager(config=config.power, monitor=monitor, clock=clock, node_id=config.node_id)


def _mqtt_transport(agent: Agent) -> Transport:
    mqtt = agent.config.mqtt
    tls = TlsFiles(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if mqtt.tls else None
    return MqttTransport(
        client_id=agent.node_id,
        host=mqtt.host,
        port=mqtt.port,
        keepalive_s=mqtt.keepalive_s,
        session_expiry_s=mqtt.session_expiry_s,
        reconnect_min_s=mqtt.reconnect_min_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        tls=tls,
        will=agent._will,
        on_connect=agent._on_connect,
        on_disconnect=agent._on_disconnect,
        on_message=agent._on_message,
    )
