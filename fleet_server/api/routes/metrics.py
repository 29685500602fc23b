"""Response-time figures (press → … → resolved) as percentiles per district.

Figures are per district only (no fleet-wide total), so leaving out the
districts outside the caller's scope leaks nothing (docs/access.md).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.models import AlertType
from fleet_server.response_times import UNKNOWN_DISTRICT, ResponseTimesPublic, response_times

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get("/response-times")
def read_response_times(
    session: SessionDep,
    scope: ScopeDep,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> ResponseTimesPublic:
    """p50/p90/p99 seconds per stage and district; test alerts excluded."""
    figures = response_times(session=session, alert_type=alert_type, since=since)
    figures.data = [d for d in figures.data if scope.allows(_district_of(d.district))]
    return figures


def _district_of(name: str) -> str | None:
    """The district a figure row names; the unknown-district row belongs to no district."""
    return None if name == UNKNOWN_DISTRICT else name
