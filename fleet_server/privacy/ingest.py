"""Ingest for privacy: private cameras' terms enforced on the server, and the version nodes apply.

The node already refuses to analyse a private camera past its agreement
(`edge_agent.camera.privacy`); the server enforces the same terms again, by
receive time, in case a node runs an old policy or a wrong clock:

- `PrivateCameraGate` wraps the handler registered for plate events, face
  events and watchlist hits. An event from a private camera that may not
  contribute its data class (``plates``; ``faces``; a hit by its subject)
  at the moment it is received is still acked and kept as an event (so the
  node stops resending and the sequence stays whole), but its payload is
  replaced by a note saying it was withheld and why, and the wrapped
  handler never runs: no plate read row, no alert, nothing searchable.
- `PrivacyTelemetryHandler` wraps the telemetry handler and records the
  ``privacy_version`` a node says it applies (`service.record_applied`).

Registered on import, after the camera and watchlist handlers
(`fleet_server.ingest.store` imports this module last).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from fleet_server.ingest.batch import Batch
from fleet_server.ingest.registry import MessageHandler, handler_for, register_handler
from fleet_server.models import Node
from fleet_server.models.privacy import PrivateCamera
from fleet_server.privacy.service import allowed, record_applied
from proto.messages import FaceEvent, PlateEvent, Telemetry, WatchlistHitEvent

__all__ = ["PrivacyTelemetryHandler", "PrivateCameraGate", "register"]

logger = logging.getLogger(__name__)


def _data_class(message: Any) -> str:
    if isinstance(message, FaceEvent):
        return "faces"
    if isinstance(message, WatchlistHitEvent):
        return "faces" if message.subject == "person" else "plates"
    return "plates"


class PrivateCameraGate:
    """The handler registered before, run only for data a private camera may contribute."""

    rowless = True  # decide for every new event; the wrapped handler gets what it asked for

    def __init__(self, inner: MessageHandler) -> None:
        self.inner = inner
        self.is_event = inner.is_event
        self.urgent_ack = inner.urgent_ack
        self.withheld = 0
        self._key: tuple[int, datetime] | None = None
        self._terms: dict[tuple[str, str], PrivateCamera] = {}

    def _preload(self, batch: Batch, node_ids: set[str]) -> None:
        rows = batch.session.exec(
            select(PrivateCamera).where(col(PrivateCamera.node_id).in_(sorted(node_ids)))
        ).all()
        self._terms = {(r.node_id, r.camera_id): r for r in rows}
        self._key = (id(batch), batch.now)

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        batch.want(self._preload, node_id)
        return self.inner.scan(batch, node_id, message)

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if self._key != (id(batch), batch.now):  # not preloaded (a handler called directly)
            self._preload(batch, {node.node_id} if node is not None else set())
        node_id = str(event["node_id"]) if event is not None else (node.node_id if node else "")
        camera = self._terms.get((node_id, str(getattr(message, "camera_id", ""))))
        data_class = _data_class(message)
        if camera is not None and not allowed(camera, data_class, batch.now):
            if event is not None:
                reason = "agreement expired" if batch.now >= camera.expires_at else (
                    f"agreement does not allow {data_class}")  # fmt: skip
                event["payload"] = json.dumps(
                    {"withheld": reason, "camera_id": camera.camera_id,
                     "agreement": camera.agreement, "type": event.get("type")},
                    sort_keys=True,
                )  # fmt: skip
                self.withheld += 1
                logger.info("%s/%s: %s event withheld (%s)", node_id, camera.camera_id,
                            data_class, reason)  # fmt: skip
            return
        if node is not None or getattr(self.inner, "rowless", False):
            self.inner.handle(batch, node, message, event)


class PrivacyTelemetryHandler:
    """The telemetry handler registered before, plus the privacy version the node applies."""

    is_event = False
    urgent_ack = False

    def __init__(self, inner: MessageHandler) -> None:
        self.inner = inner

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return self.inner.scan(batch, node_id, message) or message.privacy_version is not None

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        self.inner.handle(batch, node, message, event)
        telemetry: Telemetry = message
        if node is not None and telemetry.privacy_version is not None:
            record_applied(batch.session, node.node_id, telemetry.privacy_version, now=batch.now)


def register() -> None:
    """Wrap the handlers registered so far (idempotent)."""
    for kind in (PlateEvent, FaceEvent, WatchlistHitEvent):
        current = handler_for(kind)
        if not isinstance(current, PrivateCameraGate):
            register_handler(kind, PrivateCameraGate(current))
    telemetry = handler_for(Telemetry)
    if not isinstance(telemetry, PrivacyTelemetryHandler):
        register_handler(Telemetry, PrivacyTelemetryHandler(telemetry))


register()
