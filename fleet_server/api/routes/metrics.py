"""Response-time figures (press → … → resolved) as percentiles per district."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from fleet_server.api.deps import CurrentUser, SessionDep
from fleet_server.models import AlertType
from fleet_server.response_times import ResponseTimesPublic, response_times

router = APIRouter(prefix="/metrics", tags=["metrics"])


@router.get("/response-times")
def read_response_times(
    session: SessionDep,
    _user: CurrentUser,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> ResponseTimesPublic:
    """p50/p90/p99 seconds per stage and district; test alerts excluded."""
    return response_times(session=session, alert_type=alert_type, since=since)
