"""Response-time percentiles per district: press → received → acknowledged →
dispatched → on scene → resolved.

Each stage is the time between two milestones stored on the alert row; an
alert counts for a stage only when it reached both ends. Test alerts are left
out. Percentiles use the nearest-rank method so every reported figure is a
time some alert actually took. Computed in Python for now (fine for months of
panic alerts); PostgreSQL's `percentile_cont` can take over at scale.

The server's receive time is the basis: every stage from `received_at` on is
measured on the server's clock (`received_to_resolved` is the whole response).
Only the stages that start at the press (`press_to_received`,
`press_to_resolved`) need the node's clock, and an alert whose press was
stamped with an implausible device time (a Pi without a real-time clock says
1970 until NTP answers; `fleet_server.device_clock`) is left out of those two
and counted (`excluded`): one such press made a district's p90 57 years.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

from sqlmodel import Field, Session, SQLModel, col, select

from fleet_server.models import Alert, AlertState, AlertType, Event

logger = logging.getLogger(__name__)

STAGES: tuple[tuple[str, str, str], ...] = (
    ("press_to_received", "pressed_at", "received_at"),
    ("received_to_acknowledged", "received_at", "acknowledged_at"),
    ("acknowledged_to_dispatched", "acknowledged_at", "dispatched_at"),
    ("dispatched_to_on_scene", "dispatched_at", "on_scene_at"),
    ("on_scene_to_resolved", "on_scene_at", "resolved_at"),
    ("received_to_resolved", "received_at", "resolved_at"),
    ("press_to_resolved", "pressed_at", "resolved_at"),
)
# The one milestone stamped by the node's clock.
DEVICE_MILESTONE = "pressed_at"
PERCENTILES = (50, 90, 99)
UNKNOWN_DISTRICT = "unknown"


class StageStats(SQLModel):
    """Seconds for one stage in one district."""

    count: int
    excluded: int = Field(
        default=0, description="alerts left out: their press time (node clock) was implausible"
    )
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    max_s: float | None


class DistrictResponseTimes(SQLModel):
    """All stages for one district."""

    district: str
    alerts: int
    implausible_press_times: int = Field(
        default=0, description="alerts whose press was stamped with an implausible device time"
    )
    stages: dict[str, StageStats]


class ResponseTimesPublic(SQLModel):
    """The `/metrics/response-times` answer."""

    alert_type: str
    since: datetime | None
    data: list[DistrictResponseTimes]


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already-sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def response_times(
    *, session: Session, alert_type: str = AlertType.PANIC, since: datetime | None = None
) -> ResponseTimesPublic:
    """Percentiles of every stage, per district, for alerts received since `since`.

    An alert's press time counts only when the press event's device time was
    plausible (the flag stored with the event at ingest).
    """
    query = (
        select(Alert, Event.ts_implausible)
        .outerjoin(Event, col(Event.event_id) == col(Alert.first_event_id))
        .where(Alert.type == alert_type, Alert.state != AlertState.TEST)
    )
    if since is not None:
        query = query.where(col(Alert.received_at) >= since)
    per_district: dict[str, list[tuple[Alert, bool]]] = {}
    for alert, implausible in session.exec(query):
        per_district.setdefault(alert.district or UNKNOWN_DISTRICT, []).append(
            (alert, bool(implausible))
        )
    data = []
    for district in sorted(per_district):
        alerts = per_district[district]
        stages = {}
        for name, start, end in STAGES:
            values: list[float] = []
            excluded = 0
            for alert, implausible in alerts:
                began, ended = getattr(alert, start), getattr(alert, end)
                if began is None or ended is None:
                    continue
                if implausible and DEVICE_MILESTONE in (start, end):
                    excluded += 1
                    continue
                values.append((ended - began).total_seconds())
            values.sort()
            p50, p90, p99 = (percentile(values, p) for p in PERCENTILES)
            stages[name] = StageStats(
                count=len(values), excluded=excluded, p50_s=p50, p90_s=p90, p99_s=p99,
                max_s=values[-1] if values else None,
            )  # fmt: skip
        suspect = sum(1 for _, bad in alerts if bad)
        row = DistrictResponseTimes(
            district=district, alerts=len(alerts), implausible_press_times=suspect, stages=stages
        )
        data.append(row)
    return ResponseTimesPublic(alert_type=alert_type, since=since, data=data)
