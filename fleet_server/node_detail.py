"""Everything the console's node page shows about one node, in one answer.

The page would otherwise make a dozen calls (node, certificates, replies,
events, alerts, power…) before it could draw; here they are one read. What
the server does not record is said, not guessed: telemetry's CPU and temperature
are not stored, and of the cameras only each one's latest counters
(`NodeCamera`, from telemetry), so the answer lists what is missing under
`not_recorded`.

Online history: the server keeps no table of every connect and disconnect;
an outage longer than the offline grace period opens a `node_offline` alert
(fleet_server.presence), so the outages of the window are those alerts (from
received to resolved, or still open), and the current state is the node row's
`online` since `online_changed_at`. Component health is the `health` of the
node's latest answered `ping` (edge_agent/system.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from fleet_server.errors import FleetServerError
from fleet_server.models import (
    Alert,
    AlertPublic,
    AlertType,
    Event,
    Node,
    NodeCertificate,
    NodeCertificatePublic,
    NodePublic,
    PowerState,
    utcnow,
)
from fleet_server.models.alert import OPEN_STATES
from fleet_server.models.enrollment import EnrollmentRequest, NodeCommand, NodeReply
from fleet_server.models.plate import NodeCamera, NodeCameraPublic
from fleet_server.power import site_targets

logger = logging.getLogger(__name__)

__all__ = ["NodeDetailPublic", "NodeNotFound", "node_detail"]

RECENT = 20
HISTORY_DAYS = 7
NOT_RECORDED = (
    "model versions (the birth names only the agent's firmware)",
    "cpu_percent",
    "temperature_c",
    "frames and drops per camera over time (only each camera's latest counters are kept)",
)


class NodeNotFound(FleetServerError, LookupError):
    """No node with that id."""


class Outage(SQLModel):
    """A period the node was offline (a `node_offline` alert)."""

    alert_id: str
    since: datetime
    until: datetime | None
    seconds: float


class OnlineHistory(SQLModel):
    """The node's presence over the last `days` days."""

    days: int
    since: datetime
    online: bool
    online_changed_at: datetime | None
    last_seen_at: datetime | None
    outages: list[Outage]
    offline_s: float
    availability_pct: float


class ComponentHealth(SQLModel):
    """The latest answered ping's `health`: overall ok and per component."""

    request_id: str
    at: datetime
    ok: bool | None
    components: dict[str, Any]


class CommandWithReply(SQLModel):
    """A command the server sent and, if it came, the node's reply."""

    request_id: str
    name: str
    args: dict[str, Any]
    sent_by: str
    sent_at: datetime
    replied: bool
    ok: bool | None
    result: dict[str, Any] | None
    error: str | None
    reply_received_at: datetime | None


class EventSummary(SQLModel):
    """A recent event, without its payload."""

    event_id: str
    type: str
    seq: int
    ts: datetime
    received_at: datetime
    alert_id: str | None
    ts_implausible: bool


class EnrollmentStep(SQLModel):
    """One step of the node's enrollment history, oldest first."""

    at: datetime
    what: str
    detail: str


class PowerNow(SQLModel):
    """The node's latest power readings (node clock) and its site's target."""

    ts: datetime
    battery_soc: float | None
    battery_v: float | None
    battery_temp_c: float | None
    autonomy_h: float | None
    load_w: float | None
    panel_w: float | None
    mains_present: bool | None
    policy_step: int | None
    autonomy_target_h: float


class NodeDetailPublic(SQLModel):
    """`GET /node-detail/{node_id}`."""

    node: NodePublic
    certificate: NodeCertificatePublic | None
    certificates: list[NodeCertificatePublic]
    health: ComponentHealth | None
    power: PowerNow | None
    cameras: list[NodeCameraPublic]
    online_history: OnlineHistory
    open_alerts: int
    alerts: list[AlertPublic]
    events: list[EventSummary]
    commands: list[CommandWithReply]
    enrollment: list[EnrollmentStep]
    not_recorded: list[str]


def _online_history(session: Session, node: Node, now: datetime) -> OnlineHistory:
    since = now - timedelta(days=HISTORY_DAYS)
    rows = session.exec(
        select(Alert)
        .where(Alert.node_id == node.node_id, Alert.type == AlertType.NODE_OFFLINE)
        .where((col(Alert.resolved_at).is_(None)) | (col(Alert.resolved_at) >= since))
        .order_by(col(Alert.received_at).desc())
        .limit(200)
    ).all()
    outages = []
    offline_s = 0.0
    for alert in rows:
        until = alert.resolved_at or alert.closed_at
        start = max(alert.received_at, since)
        end = until or now
        seconds = max(0.0, (end - start).total_seconds())
        offline_s += seconds
        outages.append(
            Outage(alert_id=alert.id, since=alert.received_at, until=until, seconds=seconds)
        )
    window = (now - since).total_seconds()
    return OnlineHistory(
        days=HISTORY_DAYS,
        since=since,
        online=node.online,
        online_changed_at=node.online_changed_at,
        last_seen_at=node.last_seen_at,
        outages=outages,
        offline_s=offline_s,
        availability_pct=round(100.0 * max(0.0, 1.0 - offline_s / window), 2),
    )


def _commands(session: Session, node_id: str) -> list[CommandWithReply]:
    rows = session.exec(
        select(NodeCommand, NodeReply)
        .outerjoin(
            NodeReply,
            (col(NodeReply.request_id) == col(NodeCommand.request_id))
            & (col(NodeReply.node_id) == col(NodeCommand.node_id)),
        )
        .where(NodeCommand.node_id == node_id)
        .order_by(col(NodeCommand.sent_at).desc())
        .limit(RECENT)
    ).all()
    return [
        CommandWithReply(
            request_id=cmd.request_id,
            name=cmd.name,
            args=cmd.args,
            sent_by=cmd.sent_by,
            sent_at=cmd.sent_at,
            replied=reply is not None,
            ok=reply.ok if reply else None,
            result=reply.result if reply else None,
            error=reply.error if reply else None,
            reply_received_at=reply.received_at if reply else None,
        )
        for cmd, reply in rows
    ]


def _health(commands: list[CommandWithReply]) -> ComponentHealth | None:
    for cmd in commands:  # newest first
        if cmd.name == "ping" and cmd.ok and cmd.result and "health" in cmd.result:
            health = cmd.result["health"]
            if not isinstance(health, dict):
                continue
            components = health.get("components")
            return ComponentHealth(
                request_id=cmd.request_id,
                at=cmd.reply_received_at or cmd.sent_at,
                ok=health.get("ok") if isinstance(health.get("ok"), bool) else None,
                components=components if isinstance(components, dict) else {},
            )
    return None


def _enrollment(
    session: Session, node: Node, certificates: list[NodeCertificate]
) -> list[EnrollmentStep]:
    first = EnrollmentStep(at=node.created_at, what="known", detail="first message or registration")
    steps = [first]
    for request in session.exec(
        select(EnrollmentRequest).where(EnrollmentRequest.node_id == node.node_id)
    ):
        steps.append(
            EnrollmentStep(
                at=request.created_at,
                what="enrollment request",
                detail=f"serial {request.serial} from {request.client_address or '?'}",
            )
        )
        if request.decided_at is not None:
            steps.append(
                EnrollmentStep(
                    at=request.decided_at,
                    what=f"request {request.state}",
                    detail=f"by {request.decided_by or '?'} {request.note}".strip(),
                )
            )
    for cert in certificates:
        steps.append(
            EnrollmentStep(
                at=cert.issued_at,
                what=f"certificate issued ({cert.issued_via})",
                detail=f"serial {cert.serial}, valid until {cert.not_after.isoformat()}",
            )
        )
        if cert.revoked_at is not None:
            steps.append(
                EnrollmentStep(
                    at=cert.revoked_at,
                    what="certificate revoked",
                    detail=f"serial {cert.serial}: {cert.revocation_reason or ''}".strip(),
                )
            )
    if node.lifecycle_changed_at is not None:
        steps.append(
            EnrollmentStep(
                at=node.lifecycle_changed_at, what=f"lifecycle {node.lifecycle}", detail=""
            )
        )
    steps.sort(key=lambda s: s.at)
    return steps


def _power(session: Session, node: Node) -> PowerNow | None:
    state = session.get(PowerState, node.node_id)
    if state is None:
        return None
    target = site_targets(session=session, site_id=node.site_id).autonomy_target_h
    return PowerNow(
        ts=state.ts,
        battery_soc=state.battery_soc,
        battery_v=state.battery_v,
        battery_temp_c=state.battery_temp_c,
        autonomy_h=state.autonomy_h,
        load_w=state.load_w,
        panel_w=state.panel_w,
        mains_present=state.mains_present,
        policy_step=state.policy_step,
        autonomy_target_h=target,
    )


def node_detail(*, session: Session, node_id: str, now: datetime | None = None) -> NodeDetailPublic:
    """The node page's whole answer (module docstring); `NodeNotFound` for an unknown id."""
    node = session.get(Node, node_id)
    if node is None:
        raise NodeNotFound(node_id)
    now = now or utcnow()
    certificates = list(
        session.exec(
            select(NodeCertificate)
            .where(NodeCertificate.node_id == node_id)
            .order_by(col(NodeCertificate.issued_at).desc())
        )
    )
    current = next((c for c in certificates if c.revoked_at is None), None)
    alerts = session.exec(
        select(Alert)
        .where(Alert.node_id == node_id)
        .order_by(col(Alert.received_at).desc())
        .limit(RECENT)
    ).all()
    open_alerts = sum(1 for a in alerts if a.state in OPEN_STATES)
    events = session.exec(
        select(Event)
        .where(Event.node_id == node_id)
        .order_by(col(Event.received_at).desc())
        .limit(RECENT)
    ).all()
    commands = _commands(session, node_id)
    return NodeDetailPublic(
        node=NodePublic.model_validate(node),
        certificate=NodeCertificatePublic.model_validate(current) if current else None,
        certificates=[NodeCertificatePublic.model_validate(c) for c in certificates],
        health=_health(commands),
        power=_power(session, node),
        cameras=[
            NodeCameraPublic.model_validate(c, update={"district": node.district})
            for c in session.exec(
                select(NodeCamera)
                .where(NodeCamera.node_id == node_id)
                .order_by(col(NodeCamera.camera_id))
            )
        ],
        online_history=_online_history(session, node, now),
        open_alerts=open_alerts,
        alerts=[AlertPublic.model_validate(a) for a in alerts],
        events=[EventSummary.model_validate(e) for e in events],
        commands=commands,
        enrollment=_enrollment(session, node, certificates),
        not_recorded=list(NOT_RECORDED),
    )
