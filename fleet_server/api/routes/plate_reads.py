"""`/plate-reads` and `/cameras`: the camera nodes' plate reads and per-camera health.

Plate reads are searched by the canonical key (exact, prefix, or one
look-alike character away: `fleet_server.plates`), narrowed by node,
district and receive-time range, newest first, one bounded page at a time.
Both lists show only nodes in the caller's scope (docs/access.md).

A search of plate reads follows vehicles, so like a watchlist it needs a
stated purpose (`X-Purpose`: case, FIR, alert or note; 428 without one) and
every search is recorded with it (`record_access`: the data-access table and
the audit log's ``data.viewed``, object ``plate_reads:<the query>``). The
camera health list is not evidence and needs none (docs/privacy.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from fleet_server.api.deps import CurrentUser, Offset, SessionDep
from fleet_server.api.scope import PurposeDep, ScopeDep
from fleet_server.models.plate import CameraSummaries, NodeCamerasPublic, PlateReadsPublic
from fleet_server.plates import (
    PlateMatch,
    PlateSearchError,
    camera_health,
    camera_summaries,
    search_plate_reads,
)
from fleet_server.scope import record_access

router = APIRouter(tags=["plate reads"])

NodeIdQuery = Annotated[str | None, Query(max_length=64, description="only this node")]


@router.get("/plate-reads")
def read_plate_reads(
    session: SessionDep,
    user: CurrentUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    plate: Annotated[
        str | None,
        Query(max_length=32, description="plate text; compared without spaces and dashes"),
    ] = None,
    match: Annotated[
        PlateMatch, Query(description="exact, prefix, or fuzzy (one look-alike character)")
    ] = PlateMatch.EXACT,
    node_id: NodeIdQuery = None,
    district: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="received at or after (UTC)")] = None,
    until: Annotated[datetime | None, Query(description="received before (UTC)")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PlateReadsPublic:
    """Plate reads newest first, with the whole match's `count` for paging (purpose recorded)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=f"{name} needs a UTC offset (for example a trailing Z)",
            )
    try:
        data, count = search_plate_reads(
            session=session, query=plate, match=match, node_id=node_id, district=district,
            since=since, until=until, scope=scope, offset=offset, limit=limit,
        )  # fmt: skip
    except PlateSearchError as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)
        ) from None
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="plate_reads",
        object_id=_query_label(plate=plate, match=match, node_id=node_id, district=district,
                               since=since, until=until),
        purpose=purpose,
    )  # fmt: skip
    return PlateReadsPublic(data=data, count=count)


def _query_label(**terms: object) -> str:
    """What was searched, as the audit record's object (``plate=LEB6881 match=exact``)."""
    parts = [
        f"{name}={value.isoformat() if isinstance(value, datetime) else value}"
        for name, value in terms.items()
        if value is not None and not (name == "match" and terms.get("plate") is None)
    ]
    return " ".join(parts)[:128] or "*"


@router.get("/cameras")
def read_cameras(
    session: SessionDep, scope: ScopeDep, node_id: NodeIdQuery = None
) -> NodeCamerasPublic:
    """Each camera's latest health from its node's telemetry (nodes in scope, at most 1,000)."""
    data = camera_health(session=session, node_id=node_id, scope=scope)
    return NodeCamerasPublic(data=data, count=len(data))


@router.get("/cameras/summary")
def read_camera_summaries(session: SessionDep, scope: ScopeDep) -> CameraSummaries:
    """Per node in scope that reports cameras: how many are ok, stalled (a fault) or shed.

    What the console's node list shows beside each node (one request for the
    whole list); `GET /cameras` has each camera's figures.
    """
    data = camera_summaries(session=session, scope=scope)
    return CameraSummaries(data=data, count=len(data))
