"""`/alerts/{alert_id}/snapshots`: which cameras a panic alert asked for a still, and their answers.

The panic snapshot pull (`fleet_server.alerting.snapshots`) asks the camera
nodes nearest the pillar; this route shows the alert's record of it: each
node asked, why (same site or within the radius, and how far), and its
reply (the SHA-256 of each still it stored, or why a camera had none), or
``waiting``/``expired`` while there is none. Scoped like every alert route
(an alert outside the caller's districts is a 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.alerting.snapshots import alert_snapshots
from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.models import Alert, utcnow

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("/{alert_id}/snapshots")
def read_alert_snapshots(session: SessionDep, scope: ScopeDep, alert_id: str) -> dict[str, Any]:
    """The snapshot requests of an alert, oldest first, each with its node's answer."""
    alert = session.get(Alert, alert_id)
    if alert is None or not scope.allows(alert.district):
        raise not_in_scope(f"alert {alert_id!r}")
    data = alert_snapshots(session, alert_id, now=utcnow())
    return {"data": data, "count": len(data)}
