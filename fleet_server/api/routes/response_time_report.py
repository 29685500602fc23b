"""`/response-times`: the console's response-time page — target verdicts, CSV, SVG plots.

The percentiles are `fleet_server.response_times`' (server receive time);
`GET /metrics/response-times` stays the plain figures. Every answer holds only
the districts of the caller's scope (docs/access.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.models import AlertType
from fleet_server.response_time_report import (
    STAGE_NAMES,
    Percentile,
    ResponseTimeReport,
    Target,
    judge,
    render_chain_svg,
    render_stage_svg,
    to_csv,
)
from fleet_server.response_times import UNKNOWN_DISTRICT, ResponseTimesPublic, response_times
from fleet_server.scope import Scope

router = APIRouter(prefix="/response-times", tags=["metrics"])


def _target(
    target_stage: Annotated[str, Query(description="one of the stage names")] = (
        "received_to_acknowledged"
    ),
    target_pct: Annotated[int, Query(description="50, 90 or 99")] = 90,
    target_s: Annotated[float, Query(gt=0, le=86400 * 7, description="seconds")] = 15.0,
) -> Target:
    if target_pct not in (50, 90, 99):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail="target_pct must be 50, 90 or 99 (the percentiles computed)",
        )
    if target_stage not in STAGE_NAMES:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail=f"target_stage must be one of {list(STAGE_NAMES)}",
        )
    return Target(stage=target_stage, percentile=cast(Percentile, target_pct), seconds=target_s)


TargetDep = Annotated[Target, Depends(_target)]


def _figures(
    session: SessionDep, scope: Scope, alert_type: AlertType, since: datetime | None
) -> ResponseTimesPublic:
    # Per district only, no fleet total: leaving out other districts leaks nothing.
    figures = response_times(session=session, alert_type=alert_type, since=since)
    figures.data = [
        row for row in figures.data
        if scope.allows(None if row.district == UNKNOWN_DISTRICT else row.district)
    ]  # fmt: skip
    return figures


@router.get("/report")
def read_report(
    session: SessionDep,
    scope: ScopeDep,
    target: TargetDep,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> ResponseTimeReport:
    """Percentiles per district since `since`, each district's verdict on the target."""
    return judge(_figures(session, scope, alert_type, since), target)


@router.get("/export.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def export_csv(
    session: SessionDep,
    scope: ScopeDep,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> Response:
    """One row per district and stage (seconds, server clock), for a spreadsheet."""
    body = to_csv(_figures(session, scope, alert_type, since))
    stamp = since.strftime("%Y%m%d") if since else "all"
    name = f"response-times-{alert_type}-{stamp}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/stage.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}}
)
def read_stage_svg(
    session: SessionDep,
    scope: ScopeDep,
    target: TargetDep,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> Response:
    """The target's stage per district (p50 bar, p90 mark, p99 whisker, target line)."""
    svg = render_stage_svg(_figures(session, scope, alert_type, since), target)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get(
    "/chain.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}}
)
def read_chain_svg(
    session: SessionDep,
    scope: ScopeDep,
    alert_type: AlertType = AlertType.PANIC,
    since: datetime | None = None,
) -> Response:
    """Each district's p90 per consecutive stage, stacked."""
    svg = render_chain_svg(_figures(session, scope, alert_type, since))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
