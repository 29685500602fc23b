"""Power: the fleet's night-time risk, a node's history and chart, and per-site targets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status

from fleet_server.api.deps import CurrentUser, SessionDep, require_roles
from fleet_server.crud import get_node
from fleet_server.models import Node, Role, User, utcnow
from fleet_server.models.power import (
    PowerHistoryPublic,
    PowerOverviewPublic,
    PowerSitePublic,
    PowerSitesPublic,
    PowerSiteUpdate,
)
from fleet_server.power import (
    list_sites,
    node_history,
    power_overview,
    set_site_targets,
    site_targets,
)
from fleet_server.power_chart import render_history_svg
from proto.topics import NAME_PATTERN

router = APIRouter(prefix="/power", tags=["power"])

Hours = Annotated[float, Query(gt=0, le=720, description="hours of history (≤ 30 days)")]
SiteId = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
SiteEditor = Annotated[User, Depends(require_roles(Role.ADMIN, Role.TECHNICIAN))]


def _node_or_404(session: SessionDep, node_id: str) -> Node:
    node = get_node(session=session, node_id=node_id)
    if node is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no node {node_id!r}")
    return node


@router.get("/overview")
def read_overview(
    session: SessionDep,
    _user: CurrentUser,
    at_risk_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> PowerOverviewPublic:
    """Every node reporting power, those that will not last until sunrise first."""
    return power_overview(session=session, at_risk_only=at_risk_only, limit=limit)


@router.get("/nodes/{node_id}/history")
def read_history(
    session: SessionDep, _user: CurrentUser, node_id: str, hours: Hours = 48
) -> PowerHistoryPublic:
    """10-minute buckets over `hours` ending at the node's latest reading."""
    return node_history(session=session, node=_node_or_404(session, node_id), hours=hours)


@router.get(
    "/nodes/{node_id}/chart.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def read_chart(
    session: SessionDep, _user: CurrentUser, node_id: str, hours: Hours = 48
) -> Response:
    """The history drawn as SVG on the server (state of charge, autonomy, panel, nights)."""
    node = _node_or_404(session, node_id)
    history = node_history(session=session, node=node, hours=hours)
    svg = render_history_svg(history, lat=node.lat, lon=node.lon)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/sites")
def read_sites(session: SessionDep, _user: CurrentUser) -> PowerSitesPublic:
    """Sites with their own targets (every other site uses the defaults)."""
    rows = list_sites(session=session)
    return PowerSitesPublic(
        data=[PowerSitePublic.model_validate(r, from_attributes=True) for r in rows],
        count=len(rows),
    )


@router.get("/sites/{site_id}")
def read_site(session: SessionDep, _user: CurrentUser, site_id: SiteId) -> PowerSitePublic:
    """A site's targets (the defaults when none were set)."""
    targets = site_targets(session=session, site_id=site_id)
    return PowerSitePublic(
        site_id=site_id,
        autonomy_target_h=targets.autonomy_target_h,
        max_battery_temp_c=targets.max_battery_temp_c,
    )


@router.put("/sites/{site_id}")
def update_site(
    session: SessionDep, user: SiteEditor, site_id: SiteId, update: PowerSiteUpdate
) -> PowerSitePublic:
    """Set a site's autonomy target and battery temperature limit (admin, technician)."""
    row = set_site_targets(
        session=session, site_id=site_id, update=update, actor=f"user:{user.username}", now=utcnow()
    )
    session.commit()
    return PowerSitePublic.model_validate(row, from_attributes=True)
