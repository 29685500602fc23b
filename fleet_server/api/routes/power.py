"""Power: the fleet's night-time risk, a node's history and chart, and per-site targets.

Everything is within the caller's scope (docs/access.md): the overview and
its counts cover nodes of the scope's districts, and a site is in scope when
one of its nodes is.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from sqlmodel import select

from fleet_server.api.deps import SessionDep, require_roles
from fleet_server.api.scope import ScopeDep, not_in_scope
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
from fleet_server.scope import Scope
from proto.topics import NAME_PATTERN

router = APIRouter(prefix="/power", tags=["power"])

Hours = Annotated[float, Query(gt=0, le=720, description="hours of history (≤ 30 days)")]
SiteId = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
SiteEditor = Annotated[User, Depends(require_roles(Role.ADMIN, Role.TECHNICIAN))]


def _node_or_404(session: SessionDep, scope: Scope, node_id: str) -> Node:
    node = get_node(session=session, node_id=node_id)
    if node is None or not scope.allows(node.district):
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no node {node_id!r}")
    return node


def _sites_in_scope(session: SessionDep, scope: Scope) -> set[str] | None:
    """Site ids with a node in scope; None for an every-district scope (every site)."""
    if scope.is_all:
        return None
    rows = session.exec(scope.filter(select(Node.site_id), Node.district)).all()
    return {r for r in rows if r is not None}


def _site_or_404(session: SessionDep, scope: Scope, site_id: str) -> None:
    sites = _sites_in_scope(session, scope)
    if sites is not None and site_id not in sites:
        raise not_in_scope(f"site {site_id!r}")


@router.get("/overview")
def read_overview(
    session: SessionDep,
    scope: ScopeDep,
    at_risk_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> PowerOverviewPublic:
    """Every node reporting power, those that will not last until sunrise first."""
    if scope.is_all:
        return power_overview(session=session, at_risk_only=at_risk_only, limit=limit)
    every = power_overview(session=session, at_risk_only=False, limit=2**31 - 1)
    items = [i for i in every.data if scope.allows(i.district)]
    shown = [i for i in items if i.at_risk_tonight] if at_risk_only else items
    return PowerOverviewPublic(
        data=shown[:limit],
        count=len(items),
        at_risk=sum(1 for i in items if i.at_risk_tonight),
        below_target=sum(1 for i in items if i.below_target),
    )


@router.get("/nodes/{node_id}/history")
def read_history(
    session: SessionDep, scope: ScopeDep, node_id: str, hours: Hours = 48
) -> PowerHistoryPublic:
    """10-minute buckets over `hours` ending at the node's latest reading."""
    return node_history(session=session, node=_node_or_404(session, scope, node_id), hours=hours)


@router.get(
    "/nodes/{node_id}/chart.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def read_chart(session: SessionDep, scope: ScopeDep, node_id: str, hours: Hours = 48) -> Response:
    """The history drawn as SVG on the server (state of charge, autonomy, panel, nights)."""
    node = _node_or_404(session, scope, node_id)
    history = node_history(session=session, node=node, hours=hours)
    svg = render_history_svg(history, lat=node.lat, lon=node.lon)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/sites")
def read_sites(session: SessionDep, scope: ScopeDep) -> PowerSitesPublic:
    """Sites with their own targets (every other site uses the defaults), in scope."""
    sites = _sites_in_scope(session, scope)
    rows = [r for r in list_sites(session=session) if sites is None or r.site_id in sites]
    return PowerSitesPublic(
        data=[PowerSitePublic.model_validate(r, from_attributes=True) for r in rows],
        count=len(rows),
    )


@router.get("/sites/{site_id}")
def read_site(session: SessionDep, scope: ScopeDep, site_id: SiteId) -> PowerSitePublic:
    """A site's targets (the defaults when none were set)."""
    _site_or_404(session, scope, site_id)
    targets = site_targets(session=session, site_id=site_id)
    return PowerSitePublic(
        site_id=site_id,
        autonomy_target_h=targets.autonomy_target_h,
        max_battery_temp_c=targets.max_battery_temp_c,
    )


@router.put("/sites/{site_id}")
def update_site(
    session: SessionDep, user: SiteEditor, scope: ScopeDep, site_id: SiteId, update: PowerSiteUpdate
) -> PowerSitePublic:
    """Set a site's autonomy target and battery temperature limit (admin, technician)."""
    _site_or_404(session, scope, site_id)
    row = set_site_targets(
        session=session, site_id=site_id, update=update, actor=f"user:{user.username}", now=utcnow()
    )
    session.commit()
    return PowerSitePublic.model_validate(row, from_attributes=True)
