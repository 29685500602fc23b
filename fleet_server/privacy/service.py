"""Privacy policy model functions: versions, delivery, what nodes apply, private cameras, expiry.

No HTTP here (the routes are `fleet_server.privacy.routes`). A node's policy
is one document — per camera its masks and, for a private camera, its
agreement — at a version that grows with every change; every version is a
row of its own with who changed it and why, and the change is appended to
the audit log. Delivery is the node's ordinary runtime configuration: a
``set_config`` command with the key ``privacy.policy`` (the document as
JSON text), recorded as a `NodeCommand`; the node says in telemetry which
version it applies (`record_applied`), and `lagging_nodes` lists the nodes
behind. A private camera's agreement expiring within `warn_days` opens one
alert on its node for admins (`ExpiryWarningJob`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting import AlertNotice, PolicyCache, notice, open_alert
from fleet_server.errors import FleetServerError
from fleet_server.models import AlertType, Node, NodeCommand, Severity, new_id
from fleet_server.models.privacy import (
    NodePrivacy,
    PrivacyPolicyVersion,
    PrivateCamera,
    PrivateCameraIn,
)
from fleet_server.scope import Scope
from proto.codec import encode, topic_for
from proto.errors import ProtoError
from proto.limits import MAX_PAYLOAD_BYTES
from proto.messages import SetConfigCommand
from proto.topics import Channel

__all__ = [
    "POLICY_KEY",
    "ExpiryWarningJob",
    "PrivacyDeliveryJob",
    "PrivacyError",
    "current_version",
    "document",
    "lagging_nodes",
    "policy_command",
    "private_cameras",
    "record_applied",
    "redact_cameras",
    "redact_source",
    "set_masks",
    "set_private_camera",
]

if TYPE_CHECKING:
    from fleet_server.ingest.acks import Publisher

logger = logging.getLogger(__name__)

POLICY_KEY = "privacy.policy"  # the node's runtime config key (edge_agent.config.RUNTIME_KEYS)
COMMAND_TTL = timedelta(hours=1)


class PrivacyError(FleetServerError):
    """The privacy package's root: a change or delivery it refuses (the message says why)."""


def current_version(session: Session, node_id: str) -> PrivacyPolicyVersion | None:
    """The node's newest policy version, or None (nothing masked)."""
    return session.exec(
        select(PrivacyPolicyVersion)
        .where(col(PrivacyPolicyVersion.node_id) == node_id)
        .order_by(col(PrivacyPolicyVersion.version).desc())
        .limit(1)
    ).first()


def history(session: Session, node_id: str, *, limit: int = 50) -> list[PrivacyPolicyVersion]:
    """The node's versions, newest first."""
    return list(
        session.exec(
            select(PrivacyPolicyVersion)
            .where(col(PrivacyPolicyVersion.node_id) == node_id)
            .order_by(col(PrivacyPolicyVersion.version).desc())
            .limit(limit)
        ).all()
    )


def document(row: PrivacyPolicyVersion) -> dict[str, Any]:
    """The policy as the node takes it (`edge_agent.camera.privacy.PrivacyPolicy`)."""
    return {"version": row.version, "cameras": row.cameras}


def _new_version(
    session: Session, node_id: str, cameras: dict[str, Any], *, actor: str, reason: str,
    now: datetime,
) -> PrivacyPolicyVersion:  # fmt: skip
    current = current_version(session, node_id)
    row = PrivacyPolicyVersion(
        node_id=node_id, version=(current.version if current else 0) + 1,
        cameras={k: v for k, v in sorted(cameras.items()) if v.get("masks") or v.get("private")},
        changed_by=actor[:64], reason=reason[:500], created_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def _cameras(session: Session, node_id: str) -> dict[str, dict[str, Any]]:
    current = current_version(session, node_id)
    return {k: dict(v) for k, v in (current.cameras if current else {}).items()}


def set_masks(
    session: Session,
    node: Node,
    camera_id: str,
    masks: Sequence[Sequence[tuple[float, float]]],
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> PrivacyPolicyVersion:
    """A new version with `camera_id`'s masks replaced (the other cameras as they were)."""
    cameras = _cameras(session, node.node_id)
    entry = cameras.setdefault(camera_id, {})
    before = len(entry.get("masks", []))
    entry["masks"] = [[[round(x, 5), round(y, 5)] for x, y in polygon] for polygon in masks]
    row = _new_version(session, node.node_id, cameras, actor=actor, reason=reason, now=now)
    audit.record(
        session, actor=f"user:{actor}", action="privacy.masks_changed",
        object=f"camera:{node.node_id}/{camera_id}", now=now,
        detail={"version": row.version, "masks_before": before, "masks": len(masks),
                "reason": reason},
    )  # fmt: skip
    return row


def set_private_camera(
    session: Session, node: Node, camera_id: str, data: PrivateCameraIn, *, actor: str,
    now: datetime,
) -> tuple[PrivateCamera, PrivacyPolicyVersion]:  # fmt: skip
    """Mark (or re-mark) a camera as privately owned, and a new version carrying its terms."""
    row = session.get(PrivateCamera, (node.node_id, camera_id))
    renewed = row is not None and row.expires_at != data.expires_at
    if row is None:
        row = PrivateCamera(node_id=node.node_id, camera_id=camera_id, owner=data.owner,
                            agreement=data.agreement, expires_at=data.expires_at,
                            updated_by=actor[:64])  # fmt: skip
    row.owner, row.agreement, row.expires_at = data.owner, data.agreement, data.expires_at
    row.allow, row.updated_by, row.updated_at = list(data.allow), actor[:64], now
    if renewed:
        row.warned_at = None  # a new expiry is warned about again
    session.add(row)
    cameras = _cameras(session, node.node_id)
    held = cameras.get(camera_id, {}).get("private") or {}
    terms: dict[str, Any] = {
        "owner": data.owner, "agreement": data.agreement,
        "expires_at": data.expires_at.isoformat().replace("+00:00", "Z"), "allow": list(data.allow),
    }  # fmt: skip
    source = data.source if data.source is not None else held.get("source")
    if source:  # a third-party stream the node opens itself (kept when not given again)
        terms["source"] = source
    if data.standards is not None:
        terms["standards"] = data.standards.model_dump()
    cameras.setdefault(camera_id, {})["private"] = terms
    version = _new_version(session, node.node_id, cameras, actor=actor, reason=data.reason, now=now)
    audit.record(
        session, actor=f"user:{actor}", action="privacy.private_camera_set",
        object=f"camera:{node.node_id}/{camera_id}", now=now,
        detail={"version": version.version, "owner": data.owner, "agreement": data.agreement,
                "expires_at": data.expires_at.isoformat(), "allow": list(data.allow),
                "reason": data.reason, "source": redact_source(source) if source else None,
                "standards": terms.get("standards")},
    )  # fmt: skip
    return row, version


def redact_source(source: str) -> str:
    """A camera source as the API and the audit log may show it: no ``user:password@``."""
    parts = urlsplit(source)
    if "@" not in parts.netloc:
        return source
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rsplit("@", 1)[1], parts.path, "", ""))


def redact_cameras(cameras: dict[str, Any]) -> dict[str, Any]:
    """A policy document's cameras with every private source redacted (for the API)."""
    shown: dict[str, Any] = {}
    for camera_id, camera in cameras.items():
        private = camera.get("private") if isinstance(camera, dict) else None
        if isinstance(private, dict) and private.get("source"):
            camera = {**camera, "private": {**private, "source": redact_source(private["source"])}}
        shown[camera_id] = camera
    return shown


def policy_command(
    session: Session, row: PrivacyPolicyVersion, *, actor: str, now: datetime
) -> SetConfigCommand:
    """The ``set_config`` command carrying `row` to its node, recorded (publish after commit).

    `actor` is a user name, or ``system`` for the server's own re-delivery.
    """
    text = json.dumps(document(row), separators=(",", ":"), sort_keys=True)
    command = SetConfigCommand(
        node_id=row.node_id, ts=now, request_id=new_id(), expires_at=now + COMMAND_TTL,
        changes={POLICY_KEY: text},
    )  # fmt: skip
    try:
        size = len(encode(command))
    except ProtoError:
        size = MAX_PAYLOAD_BYTES[Channel.CMD] + 1
    if size > MAX_PAYLOAD_BYTES[Channel.CMD]:
        raise PrivacyError(
            f"the privacy policy is too large for one command ({size} bytes, at most "
            f"{MAX_PAYLOAD_BYTES[Channel.CMD]}); use fewer or simpler polygons"
        )
    session.add(
        NodeCommand(
            request_id=command.request_id, node_id=row.node_id, name="set_config",
            args={"privacy_version": row.version}, sent_by=actor[:64], sent_at=now,
        )
    )  # fmt: skip
    audit.record(
        session, actor="system" if actor == "system" else f"user:{actor}",
        action="privacy.delivered", object=f"node:{row.node_id}",
        detail={"version": row.version, "request_id": command.request_id}, now=now,
    )  # fmt: skip
    return command


def record_applied(session: Session, node_id: str, version: int, *, now: datetime) -> None:
    """Remember the version a node says it applies (telemetry)."""
    row = session.get(NodePrivacy, node_id)
    if row is None:
        row = NodePrivacy(node_id=node_id, version=version, reported_at=now)
    row.version, row.reported_at = version, now
    session.add(row)


@dataclass(frozen=True)
class Lag:
    """A node whose applied privacy version is older than its current one (or unknown)."""

    node_id: str
    district: str | None
    current: int
    applied: int | None
    reported_at: datetime | None


def lagging_nodes(session: Session, scope: Scope) -> list[Lag]:
    """Nodes in scope applying an older version than their newest, or none reported."""
    newest: dict[str, int] = {}
    for node_id, version in session.exec(
        select(PrivacyPolicyVersion.node_id, PrivacyPolicyVersion.version)
    ).all():
        newest[node_id] = max(version, newest.get(node_id, 0))
    if not newest:
        return []
    query = select(Node).where(col(Node.node_id).in_(sorted(newest)))
    nodes = session.exec(scope.filter_nodes(query, Node.node_id).order_by(col(Node.node_id)))
    applied = {
        r.node_id: r
        for r in session.exec(
            select(NodePrivacy).where(col(NodePrivacy.node_id).in_(sorted(newest)))
        ).all()
    }
    out = []
    for node in nodes.all():
        held = applied.get(node.node_id)
        if held is None or held.version < newest[node.node_id]:
            out.append(
                Lag(node_id=node.node_id, district=node.district, current=newest[node.node_id],
                    applied=held.version if held else None,
                    reported_at=held.reported_at if held else None)
            )  # fmt: skip
    return out


def private_cameras(session: Session, scope: Scope) -> list[PrivateCamera]:
    """The private cameras of nodes in scope, soonest expiry first."""
    query = select(PrivateCamera).order_by(col(PrivateCamera.expires_at))
    return list(session.exec(scope.filter_nodes(query, PrivateCamera.node_id)).all())


def allowed(camera: PrivateCamera, data_class: str, at: datetime) -> bool:
    """May the private camera contribute `data_class` at `at`?"""
    return at < camera.expires_at and data_class in camera.allow


@dataclass
class ExpiryWarningJob:
    """A private camera's agreement expiring within `warn_days` opens one alert for admins.

    One alert per agreement expiry (``warned_at``); a renewed agreement with a
    new expiry is warned about again. The alert (type ``agreement_expiring``,
    P4) sits on the camera's node, so it is scoped like the node.
    """

    ack_timeout_s: float = 120.0
    warn_days: float = 14.0
    every_s: float = 300.0
    name: str = "privacy_agreement_expiry"
    _next_at: datetime | None = field(default=None, init=False, repr=False)
    _policies: PolicyCache | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._next_at is not None and now < self._next_at:
            return []
        self._next_at = now + timedelta(seconds=self.every_s)
        due = session.exec(
            select(PrivateCamera)
            .where(col(PrivateCamera.warned_at).is_(None))
            .where(col(PrivateCamera.expires_at) <= now + timedelta(days=self.warn_days))
        ).all()
        if not due:
            return []
        if self._policies is None:
            self._policies = PolicyCache(ack_timeout_s=self.ack_timeout_s)
        policies = self._policies.get(session)
        notices = []
        for camera in due:
            node = session.get(Node, camera.node_id)
            camera.warned_at = now
            session.add(camera)
            if node is None:
                continue
            when = camera.expires_at.strftime("%Y-%m-%d %H:%M UTC")
            verb = "expired" if camera.expires_at <= now else "expires"
            alert = open_alert(
                session=session, node=node, alert_type=AlertType.AGREEMENT_EXPIRING, now=now,
                policies=policies,
                detail=f"private camera {camera.camera_id} ({camera.owner}, agreement "
                       f"{camera.agreement}) {verb} {when}"[:200],
            )  # fmt: skip
            alert.severity = Severity.P4.value
            audit.record(
                session, actor="system", action="privacy.agreement_expiring",
                object=f"camera:{camera.node_id}/{camera.camera_id}", now=now,
                detail={"agreement": camera.agreement, "expires_at": camera.expires_at.isoformat(),
                        "alert_id": alert.id},
            )  # fmt: skip
            notices.append(notice("created", alert, now=now, command=False))
            logger.info("private camera %s/%s: agreement %s %s %s", camera.node_id,
                        camera.camera_id, camera.agreement, verb, when)  # fmt: skip
        return notices


def _no_publisher() -> Publisher | None:
    return None


@dataclass
class PrivacyDeliveryJob:
    """Online nodes applying an older privacy version than their current one get it again.

    A node that was offline when an admin saved, or that lost the command,
    would otherwise analyse with old masks until someone pressed "Send
    again". Every `every_s` the job looks at the lagging nodes that are
    online and sends each its current version, at most once per `resend_s`
    for the same version (the node needs a moment to apply and report it),
    and at most `limit` per run. Audited as ``privacy.delivered`` by
    ``system``. Without a publisher (no broker) it does nothing.
    """

    publisher: Callable[[], Publisher | None] = _no_publisher
    every_s: float = 30.0
    resend_s: float = 300.0
    limit: int = 200
    name: str = "privacy_delivery"
    _next_at: datetime | None = field(default=None, init=False, repr=False)
    _sent: dict[str, tuple[int, datetime]] = field(default_factory=dict, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._next_at is not None and now < self._next_at:
            return []
        self._next_at = now + timedelta(seconds=self.every_s)
        publisher = self.publisher()
        if publisher is None:
            return []
        sent = 0
        for lag in lagging_nodes(session, Scope.everything()):
            if sent >= self.limit:
                break
            last = self._sent.get(lag.node_id)
            if (
                last is not None
                and last[0] == lag.current
                and now - last[1] < timedelta(seconds=self.resend_s)
            ):
                continue
            node = session.get(Node, lag.node_id)
            row = current_version(session, lag.node_id)
            if node is None or not node.online or row is None:
                continue
            try:
                command = policy_command(session, row, actor="system", now=now)
            except PrivacyError as exc:
                logger.error("%s: privacy version %d not re-sent: %s", lag.node_id, row.version,
                             exc)  # fmt: skip
                self._sent[lag.node_id] = (row.version, now)
                continue
            publisher.publish(topic_for(command), encode(command), qos=1)
            self._sent[lag.node_id] = (row.version, now)
            sent += 1
            logger.info("%s: privacy version %d sent again (applies %s)", lag.node_id,
                        row.version, lag.applied)  # fmt: skip
        return []
