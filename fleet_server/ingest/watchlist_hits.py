"""Ingest for watchlists: a hit opens an alert; telemetry says which versions a node holds.

Each hit opens its own alert (two hits from one node are two different
vehicles or people, never joined), with the severity of its watchlist's
category (`fleet_server.watchlists.service.SEVERITY_BY_CATEGORY`) and a
`watchlisthit` row an operator must confirm or reject before dispatch. The
pillar's light is not told (a hit is no business of the person standing at
the pillar). Hits are rare, so the handler reads its watchlist row directly
instead of through a batched preload.

Telemetry keeps whatever handler was registered for it and adds the
``watchlists`` versions to `nodewatchlist`, for the lag list.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import col, select

from fleet_server.alerting import notice, open_alert
from fleet_server.ingest.batch import Batch
from fleet_server.ingest.registry import MessageHandler, handler_for, register_handler
from fleet_server.models import AlertType, Node, Severity
from fleet_server.models.watchlist import Watchlist, WatchlistHit
from fleet_server.watchlists.service import SEVERITY_BY_CATEGORY, record_versions
from proto.messages import Telemetry, WatchlistHitEvent

__all__ = ["WatchlistHitHandler", "WatchlistTelemetryHandler", "register"]

logger = logging.getLogger(__name__)


class WatchlistHitHandler:
    """A node's watchlist hit: an alert of its own and a hit row awaiting a decision."""

    is_event = True
    urgent_ack = False

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return True

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if node is None or event is None:
            return
        hit: WatchlistHitEvent = message
        wl = batch.session.exec(
            select(Watchlist).where(col(Watchlist.name) == hit.watchlist_id)
        ).first()
        severity = SEVERITY_BY_CATEGORY.get(wl.category, Severity.P3) if wl else Severity.P3
        what = hit.listed or hit.entry_id
        alert = open_alert(
            session=batch.session, node=node, alert_type=AlertType.WATCHLIST_HIT, now=batch.now,
            policies=batch.policies, event_id=hit.event_id, pressed_at=hit.ts,
            detail=f"{hit.watchlist_id}: {what} ({hit.match}) on {hit.camera_id}"[:200],
            rows=batch.alert_rows,
        )  # fmt: skip
        alert.severity = severity.value
        event["alert_id"] = alert.id
        batch.session.add(
            WatchlistHit(
                event_id=hit.event_id, alert_id=alert.id, node_id=node.node_id,
                watchlist_name=hit.watchlist_id, watchlist_version=hit.watchlist_version,
                entry_id=hit.entry_id, subject=hit.subject, match=hit.match,
                camera_id=hit.camera_id, plate=hit.plate, listed=hit.listed,
                confidence=hit.confidence, ts=hit.ts, received_at=batch.now,
            )
        )  # fmt: skip
        batch.out.notices.append(
            notice("created", alert, now=batch.now, event_id=hit.event_id, command=False)
        )
        logger.info("%s: watchlist hit on %s (%s)", node.node_id, hit.watchlist_id, hit.match)


class WatchlistTelemetryHandler:
    """The telemetry handler registered before, plus the watchlist versions the node holds."""

    is_event = False
    urgent_ack = False

    def __init__(self, inner: MessageHandler) -> None:
        self.inner = inner

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return self.inner.scan(batch, node_id, message) or bool(message.watchlists)

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        self.inner.handle(batch, node, message, event)
        telemetry: Telemetry = message
        if node is not None and telemetry.watchlists:
            record_versions(batch.session, node.node_id, telemetry.watchlists, now=batch.now)


def register() -> None:
    """Make the batch loop use these handlers (idempotent)."""
    register_handler(WatchlistHitEvent, WatchlistHitHandler())
    current = handler_for(Telemetry)
    if not isinstance(current, WatchlistTelemetryHandler):
        register_handler(Telemetry, WatchlistTelemetryHandler(current))


register()
