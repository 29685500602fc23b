"""The uplink: MQTT session, status/birth, the durable outbox on the wire, resends and acks.

What it does (docs/panic-flow.md, "Edge node"):

- every event is written to the `Outbox` (fsynced) before it is published
  QoS 1, and deleted only on the server's application `Ack` (a PUBACK is
  not a delivery); listeners hear about every written and acked event;
- the last-will is the retained offline `Status`, made before every connect
  attempt with a fresh, durably counted ``bd_seq``;
- on every connect: retained online `Status`, `Birth` (same ``bd_seq``, the
  node's capabilities), then the whole outbox in ``seq`` order; unacked
  events again after ``outbox.resend_after_s``;
- downlink: acks are handled here, commands go to the router, anything that
  cannot be decoded goes to the router's reject path (counted, never fatal).

It is also a component: it contributes ``outbox_depth`` to telemetry and is
healthy while MQTT is up and the outbox takes writes. The transport is made
by a factory that gets this object (`will`, `on_connect`, `on_disconnect`,
`on_message`), so tests run it on an in-memory transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_agent.component import CommandHandler, EventBuilder, Health, NodeContext, Signal
from edge_agent.errors import OutboxError
from edge_agent.mqtt import MqttTransport, TlsFiles, Transport, Will
from edge_agent.outbox import Outbox, StoredEvent
from hardware.clock import Clock
from proto.codec import decode, encode, topic_for
from proto.errors import BadTopic, ProtoError
from proto.messages import Ack, Birth, Capability, CommandBase, Status, WireModel
from proto.topics import birth_topic, downlink_filters, parse_topic, status_topic

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

__all__ = ["AckListener", "EventListener", "TransportFactory", "Uplink", "mqtt_transport"]

logger = logging.getLogger(__name__)

EventListener = Callable[[StoredEvent], None]
AckListener = Callable[[list[str]], None]
TransportFactory = Callable[["Uplink"], Transport]
_STOP_WAIT_S = 3.0


class Uplink:
    """The node's link to the fleet server; see the module docstring."""

    name = "uplink"

    def __init__(
        self,
        *,
        config: Callable[[], AgentConfig],
        outbox: Outbox,
        clock: Clock,
        counters: Counter[str],
        birth: Callable[[int], Birth],
        on_command: Callable[[CommandBase], None],
        on_reject: Callable[[str, bytes, ProtoError], None],
        signal: Callable[[Signal], None],
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self._config = config
        self.node_id = config().node_id
        self.outbox = outbox
        self.clock = clock
        self.counters = counters
        self._birth = birth
        self._on_command = on_command
        self._on_reject = on_reject
        self._signal = signal
        self._transport_factory = transport_factory or mqtt_transport
        self.transport: Transport | None = None
        self.bd_seq = outbox.bd_seq
        self.outbox_ok = True
        self.event_listeners: list[EventListener] = []
        self.ack_listeners: list[AckListener] = []

    @property
    def config(self) -> AgentConfig:
        return self._config()

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.connected

    # -------------------------------------------------------- component face

    @property
    def capabilities(self) -> Sequence[Capability]:
        return ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def telemetry(self) -> Mapping[str, Any]:
        return {"outbox_depth": self.outbox.depth}

    def health(self) -> Health:
        problems = []
        if not self.connected:
            problems.append("MQTT down")
        if not self.outbox_ok:
            problems.append("outbox not writable")
        if problems:
            return Health(False, "; ".join(problems))
        return Health(True, f"MQTT up, outbox {self.outbox.depth} waiting")

    async def run(self, ctx: NodeContext) -> None:
        """Connect (and keep reconnecting), resend unacked events; stop the transport on cancel."""
        transport = self._transport_factory(self)
        self.transport = transport
        for topic_filter in downlink_filters(self.node_id):
            transport.subscribe(topic_filter, qos=1)
        transport_task = asyncio.ensure_future(transport.run())
        resend_task = asyncio.ensure_future(self._resend_loop())
        try:
            await asyncio.shield(transport_task)
        finally:
            resend_task.cancel()
            transport.stop()
            try:
                await asyncio.wait_for(asyncio.shield(transport_task), _STOP_WAIT_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                transport_task.cancel()
            except Exception:
                logger.exception("%s: transport ended with an error", self.node_id)
            for task in (resend_task, transport_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # ---------------------------------------------------------------- outbox

    def write_event(self, build: EventBuilder) -> StoredEvent | None:
        """Outbox first (fsynced), then publish, then tell the listeners."""
        try:
            stored = self.outbox.append(build)
        except OutboxError:
            # Disk trouble must not silence a press: report it loudly. The
            # event is not sent without its durable copy (no seq to give it).
            self.outbox_ok = False
            self.counters["outbox_errors"] += 1
            logger.critical("%s: cannot write event to the outbox", self.node_id, exc_info=True)
            return None
        self.outbox_ok = True
        self.counters["events_written"] += 1
        self.publish_events([stored])
        for listener in self.event_listeners:
            try:
                listener(stored)
            except Exception:
                logger.exception("%s: event listener failed", self.node_id)
        return stored

    def publish_events(self, events: list[StoredEvent]) -> None:
        if self.transport is None or not self.transport.connected:
            return
        published: list[str] = []
        for stored in events:
            if self.transport.publish(stored.topic, stored.payload, qos=1):
                published.append(stored.event_id)
        self.outbox.mark_published(published, at=self.clock.monotonic())
        self.counters["events_published"] += len(published)

    def publish(self, message: WireModel, *, qos: int = 1) -> bool:
        if self.transport is None:
            return False
        return self.transport.publish(topic_for(message), encode(message), qos=qos)

    async def _resend_loop(self) -> None:
        """Re-publish events whose ack has not come within resend_after_s."""
        while True:
            resend_after = self.config.outbox.resend_after_s
            await self.clock.sleep(min(1.0, resend_after / 2))
            if not self.connected or self.outbox.depth == 0:
                continue  # nothing to resend: no query (a fleet runs this for every node)
            due = self.outbox.due(now=self.clock.monotonic(), resend_after_s=resend_after)
            if due:
                self.counters["resends"] += len(due)
                logger.info("%s: re-sending %d unacked events", self.node_id, len(due))
                self.publish_events(due)

    # ------------------------------------------------------ transport hooks

    def will(self) -> Will:
        """The last-will for the next connect attempt; bd_seq increments durably first."""
        self.bd_seq = self.outbox.next_bd_seq()
        status = Status(
            node_id=self.node_id, ts=self.clock.now(), state="offline", bd_seq=self.bd_seq
        )
        return Will(topic=status_topic(self.node_id), payload=encode(status), qos=1, retain=True)

    def on_connect(self, session_present: bool) -> None:
        transport = self.transport
        assert transport is not None
        online = Status(
            node_id=self.node_id, ts=self.clock.now(), state="online", bd_seq=self.bd_seq
        )
        transport.publish(status_topic(self.node_id), encode(online), qos=1, retain=True)
        transport.publish(birth_topic(self.node_id), encode(self._birth(self.bd_seq)), qos=1)
        self.outbox.forget_published()
        pending = self.outbox.pending()
        if pending:
            logger.info("%s: connected; sending %d waiting events", self.node_id, len(pending))
            self.publish_events(pending)
        self._signal(Signal("connected"))

    def on_disconnect(self) -> None:
        self._signal(Signal("disconnected"))

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
            if parsed.node_id != self.node_id:
                raise BadTopic(f"message for {parsed.node_id!r} on {self.node_id!r}")
            message = decode(parsed, payload)
        except ProtoError as exc:
            self._on_reject(topic, payload, exc)
            return
        if isinstance(message, Ack):
            self._on_ack(message)
        elif isinstance(message, CommandBase):
            self._on_command(message)
        else:
            self._on_reject(topic, payload, BadTopic(f"not a downlink message: {topic}"))

    def _on_ack(self, ack: Ack) -> None:
        try:
            acked = self.outbox.ack(ack.event_ids)
        except OutboxError:
            self.outbox_ok = False
            self.counters["outbox_errors"] += 1
            logger.critical("%s: cannot delete acked events", self.node_id, exc_info=True)
            return
        self.counters["acked"] += len(acked)
        self.counters["acks"] += 1
        if acked:
            for listener in self.ack_listeners:
                try:
                    listener(acked)
                except Exception:
                    logger.exception("%s: ack listener failed", self.node_id)
        self._signal(Signal("acked", tuple(acked)))

    def reload_tls(self) -> None:
        # Transports without TLS files (in-memory ones) have nothing to reload.
        reload = getattr(self.transport, "reload_tls", None)
        if callable(reload):
            reload()


def mqtt_transport(uplink: Uplink) -> Transport:
    """The real transport: paho MQTT 5 on the running loop, configured from ``[mqtt]``."""
    mqtt = uplink.config.mqtt
    tls = TlsFiles(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if mqtt.tls else None
    return MqttTransport(
        client_id=uplink.node_id,
        host=mqtt.host,
        port=mqtt.port,
        keepalive_s=mqtt.keepalive_s,
        session_expiry_s=mqtt.session_expiry_s,
        reconnect_min_s=mqtt.reconnect_min_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        tls=tls,
        will=uplink.will,
        on_connect=uplink.on_connect,
        on_disconnect=uplink.on_disconnect,
        on_message=uplink.on_message,
    )
