"""A panic press pulls snapshots from the cameras nearest the pillar (ARCHITECTURE: Alerts).

When a panic alert opens, the server sends a ``snapshot`` command
(`proto.messages.SnapshotCommand`) to the camera nodes nearest the pillar:
camera nodes on the pillar's own site first, then those within
`radius_m` by the coordinates the fleet map uses (`Node.lat`/`lon`),
nearest first, online before offline, at most `max_nodes`. A camera node
is one that reports cameras in its telemetry (`NodeCamera` rows); a
decommissioned node is never asked. Each node asked is an `AlertSnapshot`
row (and a `NodeCommand`, so its reply is kept); the node's reply carries
the SHA-256 of each still it stored in its evidence store (the image comes
over HTTPS later, never over MQTT). `alert_snapshots` is what the alert
shows: who was asked, why, and what each answered.

The pull runs after the alert's commit and off the ingest thread
(`SnapshotPuller`, a `Notifier` listener with its own thread and bounded
queue), so a press's acknowledgement never waits for it. A test press
(commissioning) pulls nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting.notices import AlertNotice
from fleet_server.models import Alert, AlertType, Node, NodeCommand, NodeReply, new_id, utcnow
from fleet_server.models.plate import NodeCamera
from fleet_server.models.snapshot import AlertSnapshot
from proto.codec import encode, topic_for
from proto.messages import SnapshotCommand

__all__ = [
    "SnapshotCandidate",
    "SnapshotPuller",
    "alert_snapshots",
    "distance_m",
    "nearest_camera_nodes",
    "request_snapshots",
]

logger = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_000.0
METRES_PER_DEGREE = 111_320.0
ACTOR = "system:snapshot"


@dataclass(frozen=True)
class SnapshotCandidate:
    """A camera node to ask, and why: ``same_site`` or ``nearby`` (with its distance)."""

    node_id: str
    reason: str
    distance_m: float | None
    online: bool


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine; plenty for a few hundred metres)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def nearest_camera_nodes(
    session: Session, pillar: Node, *, radius_m: float, max_nodes: int
) -> list[SnapshotCandidate]:
    """The camera nodes to ask for `pillar`'s panic, best first (see the module docstring)."""
    if max_nodes < 1:
        return []
    near: list[Any] = []
    if pillar.site_id:
        near.append(col(Node.site_id) == pillar.site_id)
    origin: tuple[float, float] | None = None
    if pillar.lat is not None and pillar.lon is not None and radius_m > 0:
        origin = (pillar.lat, pillar.lon)
        dlat = radius_m / METRES_PER_DEGREE
        dlon = radius_m / (METRES_PER_DEGREE * max(0.01, math.cos(math.radians(pillar.lat))))
        near.append(
            and_(
                col(Node.lat).between(pillar.lat - dlat, pillar.lat + dlat),
                col(Node.lon).between(pillar.lon - dlon, pillar.lon + dlon),
            )
        )
    if not near:
        return []
    cameras = select(NodeCamera.node_id).distinct()
    rows = session.exec(
        select(Node)
        .where(col(Node.node_id).in_(cameras))
        .where(col(Node.lifecycle) != "decommissioned")
        .where(or_(*near))
    ).all()
    found = []
    for node in rows:
        metres = None
        if origin is not None and node.lat is not None and node.lon is not None:
            metres = distance_m(*origin, node.lat, node.lon)
        same_site = bool(pillar.site_id) and node.site_id == pillar.site_id
        if not same_site and (metres is None or metres > radius_m):
            continue  # inside the bounding box, outside the circle
        found.append(
            SnapshotCandidate(
                node_id=node.node_id,
                reason="same_site" if same_site else "nearby",
                distance_m=None if metres is None else round(metres, 1),
                online=node.online,
            )
        )
    found.sort(
        key=lambda c: (
            c.reason != "same_site",
            not c.online,
            math.inf if c.distance_m is None else c.distance_m,
            c.node_id,
        )
    )
    return found[:max_nodes]


def request_snapshots(
    session: Session,
    alert: Alert,
    *,
    radius_m: float,
    max_nodes: int,
    ttl_s: float,
    now: datetime,
) -> list[SnapshotCommand]:
    """Record a ``snapshot`` command per nearby camera node (not committed); publish after."""
    pillar = session.get(Node, alert.node_id)
    if pillar is None:
        return []
    candidates = nearest_camera_nodes(session, pillar, radius_m=radius_m, max_nodes=max_nodes)
    expires = now + timedelta(seconds=ttl_s)
    commands = []
    for candidate in candidates:
        command = SnapshotCommand(
            node_id=candidate.node_id, ts=now, request_id=new_id(), expires_at=expires,
            alert_id=alert.id, reason="panic",
        )  # fmt: skip
        session.add(
            NodeCommand(
                request_id=command.request_id, node_id=candidate.node_id, name="snapshot",
                args={"alert_id": alert.id, "reason": "panic"}, sent_by=ACTOR, sent_at=now,
            )
        )  # fmt: skip
        session.add(
            AlertSnapshot(
                request_id=command.request_id, alert_id=alert.id, node_id=candidate.node_id,
                reason=candidate.reason, distance_m=candidate.distance_m, requested_at=now,
                expires_at=expires,
            )
        )  # fmt: skip
        commands.append(command)
    audit.record(
        session, actor=ACTOR, action="alert.snapshots_requested", object=f"alert:{alert.id}",
        detail={"nodes": [c.node_id for c in candidates], "radius_m": radius_m}, now=now,
    )  # fmt: skip
    return commands


def alert_snapshots(session: Session, alert_id: str, *, now: datetime) -> list[dict[str, Any]]:
    """Who was asked for this alert, why, and each answer (``waiting``, ``answered``…)."""
    rows = session.exec(
        select(AlertSnapshot)
        .where(col(AlertSnapshot.alert_id) == alert_id)
        .order_by(col(AlertSnapshot.requested_at), col(AlertSnapshot.request_id))
    ).all()
    out = []
    for row in rows:
        reply = session.get(NodeReply, (row.node_id, row.request_id))
        result: dict[str, Any] = dict(reply.result or {}) if reply is not None else {}
        if reply is None:
            status = "expired" if now > row.expires_at else "waiting"
        else:
            status = "answered" if reply.ok else "refused"
        out.append(
            {
                "request_id": row.request_id,
                "node_id": row.node_id,
                "reason": row.reason,
                "distance_m": row.distance_m,
                "requested_at": row.requested_at.isoformat(),
                "expires_at": row.expires_at.isoformat(),
                "status": status,
                "replied_at": reply.received_at.isoformat() if reply is not None else None,
                "snapshots": result.get("snapshots", []),
                "missing": result.get("missing", []),
                "error": reply.error if reply is not None else None,
            }
        )
    return out


class SnapshotPuller:
    """After a panic alert's commit: ask its nearby cameras, on a thread of its own.

    Called like a `Notifier` with every batch of notices; only a ``created``
    panic alert (not a test) is queued. The queue is bounded: past
    `queue_max` waiting alerts a pull is dropped, counted and logged (the
    alert itself is untouched).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        publisher: Callable[[], Any],
        radius_m: float,
        max_nodes: int,
        ttl_s: float,
        queue_max: int = 10_000,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.radius_m = radius_m
        self.max_nodes = max_nodes
        self.ttl_s = ttl_s
        self.pulled = 0
        self.requested = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None

    def __call__(self, notices: Sequence[AlertNotice]) -> None:
        for n in notices:
            if n.op != "created" or n.alert.type != AlertType.PANIC or n.alert.state == "test":
                continue
            try:
                self._queue.put_nowait(n.alert.id)
            except queue.Full:
                self.dropped += 1
                logger.warning("snapshot pull for alert %s dropped: queue full", n.alert.id)

    def start(self) -> None:
        """Start the puller's thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="snapshot-pull", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued (within `timeout_s`) and end the thread."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            alert_id = self._queue.get()
            if alert_id is None:
                return
            try:
                self.pull(alert_id)
            except Exception:
                self.failed += 1
                logger.exception("snapshot pull for alert %s failed", alert_id)

    def pull(self, alert_id: str) -> list[SnapshotCommand]:
        """Record and send the snapshot commands for one alert; returns them."""
        now = utcnow()
        with Session(self.engine) as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                return []
            commands = request_snapshots(
                session, alert, radius_m=self.radius_m, max_nodes=self.max_nodes,
                ttl_s=self.ttl_s, now=now,
            )  # fmt: skip
            session.commit()
        publisher = self.publisher()
        if publisher is not None:
            for command in commands:
                publisher.publish(topic_for(command), encode(command), qos=1)
        self.pulled += 1
        self.requested += len(commands)
        logger.info("alert %s: snapshots asked of %s", alert_id, [c.node_id for c in commands])
        return commands
