"""The built-in ingest handlers, one per kind of uplink message, registered on import.

- events: every event is deduplicated, acked and stored by `store_batch`;
  a panic press or a raised tamper opens an alert or joins the open one
  (`AlertEventHandler`), a power event follows `fleet_server.power`'s rules,
  and any other event (a plate read, a face, an OTA report) is just stored;
- birth and status drive node presence (`fleet_server.presence`: a birth or
  online status wins whatever its `bd_seq`, a will counts only for the
  current session); an offline status on an empty battery at night is a
  power alert;
- telemetry updates the node's test mode and its power state, and tells how
  often the node reports (the silence timeout);
- birth, online status and telemetry are stamped when sent, so they are the
  samples of the node's clock offset (`fleet_server.device_clock`);
- a reply to a command is kept for the commissioning checklist.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import col, select

from fleet_server.alerting import join_alert, notice, open_alert
from fleet_server.device_clock import record_clock_sample
from fleet_server.ingest.batch import Batch
from fleet_server.ingest.registry import register_handler
from fleet_server.models import OPEN_STATES, Alert, AlertType, Node
from fleet_server.node_commands import store_reply
from fleet_server.power import (
    preload_power_states,
    record_offline,
    record_power_event,
    record_telemetry,
)
from fleet_server.presence import apply_presence, learn_telemetry_interval
from proto.messages import (
    Birth,
    EventBase,
    PanicEvent,
    PowerEvent,
    Reply,
    Status,
    TamperEvent,
    Telemetry,
    WireModel,
)

__all__ = [
    "AlertEventHandler",
    "BirthHandler",
    "OtherMessageHandler",
    "PlainEventHandler",
    "PowerEventHandler",
    "ReplyHandler",
    "StatusHandler",
    "TelemetryHandler",
    "load_open_alerts",
    "load_power_states",
]

logger = logging.getLogger(__name__)

_ALERTING_TYPES = (AlertType.PANIC, AlertType.TAMPER)


def load_open_alerts(batch: Batch, node_ids: set[str]) -> None:
    """The open panic and tamper alerts of these nodes, in one query (oldest per kind wins).

    Only nodes with a press or a raised tamper in the batch ask: loading every
    open alert of every node was a tenth of the worker's time in `bench ingest`
    with camera nodes that keep a tamper alert open.
    """
    for alert in batch.session.exec(
        select(Alert)
        .where(col(Alert.node_id).in_(node_ids))
        .where(col(Alert.type).in_(_ALERTING_TYPES))
        .where(col(Alert.state).in_(OPEN_STATES))
        .order_by(col(Alert.received_at).desc())
    ):
        batch.open_alerts[(alert.node_id, alert.type)] = alert  # ordered desc: oldest last


def load_power_states(batch: Batch, node_ids: set[str]) -> None:
    """One query for these nodes' power states instead of a `Session.get` per node.

    Each `get` autoflushed every node touched so far (a third of the worker's
    time in `bench ingest`); nodes without a row are remembered too, so their
    first power message does not miss and autoflush.
    """
    preload_power_states(batch.session, node_ids)


class PlainEventHandler:
    """An event with no rules of its own: stored, acked, nothing else."""

    is_event = True
    urgent_ack = False

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return False

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        return None


class AlertEventHandler:
    """A panic press or a raised tamper: open an alert, or join the node's open one.

    A test press (commissioning) opens its own `test` alert, which never
    escalates and is never joined.
    """

    is_event = True

    def __init__(self, alert_type: str, *, urgent_ack: bool) -> None:
        self.alert_type = alert_type
        self.urgent_ack = urgent_ack

    def raises(self, message: Any) -> bool:
        """Whether this event opens or joins an alert (a cleared tamper does not)."""
        return not isinstance(message, TamperEvent) or message.active

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        if not self.raises(message):
            return False
        batch.want(load_open_alerts, node_id)
        return True

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if node is None or event is None or not self.raises(message):
            return
        now, out = batch.now, batch.out
        test = isinstance(message, PanicEvent) and message.test
        detail = message.tamper if isinstance(message, TamperEvent) else None
        key = (node.node_id, self.alert_type)
        existing = None if test else batch.open_alerts.get(key)
        if existing is not None:
            join_alert(alert=existing, event_id=message.event_id, now=now)
            event["alert_id"] = existing.id
            out.notices.append(notice("joined", existing, now=now, event_id=message.event_id))
            return
        alert = open_alert(
            session=batch.session,
            node=node,
            alert_type=self.alert_type,
            now=now,
            policies=batch.policies,
            event_id=message.event_id,
            pressed_at=message.ts,
            test=test,
            detail=detail,
            rows=batch.alert_rows,
        )
        event["alert_id"] = alert.id
        if not test:
            batch.open_alerts[key] = alert
        out.notices.append(notice("created", alert, now=now, event_id=message.event_id))


class PowerEventHandler:
    """One open alert per node per power kind; the rules are in `fleet_server.power`."""

    is_event = True
    urgent_ack = False

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        batch.want(load_power_states, node_id)
        return True

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if node is None or event is None:
            return
        alert_id, notices = record_power_event(
            session=batch.session, node=node, event=message, now=batch.now,
            policies=batch.policies,
        )  # fmt: skip
        event["alert_id"] = alert_id
        batch.out.notices += notices


class _NodeMessageHandler:
    """Base of the non-event messages: each reads or changes its node's row."""

    is_event = False
    urgent_ack = False

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return True


class BirthHandler(_NodeMessageHandler):
    """A node's birth: its identity, firmware and place, and it is online."""

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        assert node is not None
        birth: Birth = message
        node.serial = birth.serial
        node.hardware = birth.hardware
        node.firmware_version = birth.firmware.version
        node.site_id = birth.site_id
        node.district = birth.district
        if birth.location is not None:
            node.lat, node.lon = birth.location.lat, birth.location.lon
        record_clock_sample(node=node, device_ts=birth.ts, received_at=batch.now)
        batch.out.notices += apply_presence(
            session=batch.session, node=node, bd_seq=birth.bd_seq, online=True, now=batch.now,
            policies=batch.policies, fresh=node.node_id in batch.fresh,
        )  # fmt: skip


class StatusHandler(_NodeMessageHandler):
    """The retained status (or last will): presence, and "went dark" on an empty battery."""

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        assert node is not None
        status: Status = message
        if status.state == "online":
            # Published at connect; the will (offline) was stamped then too, not when sent.
            record_clock_sample(node=node, device_ts=status.ts, received_at=batch.now)
        batch.out.notices += apply_presence(
            session=batch.session, node=node, bd_seq=status.bd_seq,
            online=status.state == "online", now=batch.now, policies=batch.policies,
            fresh=node.node_id in batch.fresh,
        )  # fmt: skip
        if status.state == "offline" and node.bd_seq == status.bd_seq:
            # Dropping off on an empty battery at night is "went dark" (power alert).
            batch.out.notices += record_offline(
                session=batch.session, node=node, now=batch.now, policies=batch.policies
            )


class TelemetryHandler(_NodeMessageHandler):
    """Periodic telemetry: test mode, and the power state with its site targets."""

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        if message.power is not None:
            batch.want(load_power_states, node_id)
        return True

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        assert node is not None
        telemetry: Telemetry = message
        node.test_mode = telemetry.test_mode
        learn_telemetry_interval(node=node, device_ts=telemetry.ts)
        record_clock_sample(node=node, device_ts=telemetry.ts, received_at=batch.now)
        batch.out.notices += record_telemetry(
            session=batch.session, node=node, telemetry=telemetry, now=batch.now,
            policies=batch.policies,
        )  # fmt: skip


class ReplyHandler(_NodeMessageHandler):
    """A reply to a command, kept for GET /api/v1/nodes/{id}/replies/{request_id}."""

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        assert node is not None
        store_reply(session=batch.session, node_id=node.node_id, reply=message, now=batch.now)


class OtherMessageHandler(_NodeMessageHandler):
    """An uplink message kind with no rules yet: its node is seen, nothing else."""

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        return None


register_handler(WireModel, OtherMessageHandler())
register_handler(EventBase, PlainEventHandler())
register_handler(PanicEvent, AlertEventHandler(AlertType.PANIC, urgent_ack=True))
register_handler(TamperEvent, AlertEventHandler(AlertType.TAMPER, urgent_ack=False))
register_handler(PowerEvent, PowerEventHandler())
register_handler(Birth, BirthHandler())
register_handler(Status, StatusHandler())
register_handler(Telemetry, TelemetryHandler())
register_handler(Reply, ReplyHandler())
