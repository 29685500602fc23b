"""What ingest refused: counts by reason and node, within the caller's scope.

Counters of nodes the fleet does not know belong to no district, so only an
every-district scope sees them (docs/access.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import select

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.crud import rejection_report
from fleet_server.models import IngestRejectionsPublic, Node

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/rejections")
def read_rejections(
    session: SessionDep,
    scope: ScopeDep,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
) -> IngestRejectionsPublic:
    """Every refused-message counter (persisted), with totals by reason and by node."""
    report = rejection_report(session=session, node_id=node_id)
    if scope.is_all:
        return report
    nodes = set(session.exec(scope.filter(select(Node.node_id), Node.district)).all())
    rows = [r for r in report.data if r.node_id in nodes]
    by_reason: dict[str, int] = {}
    by_node: dict[str, int] = {}
    for row in rows:
        by_reason[row.reason] = by_reason.get(row.reason, 0) + row.count
        by_node[row.node_id] = by_node.get(row.node_id, 0) + row.count
    return IngestRejectionsPublic(
        data=rows, by_reason=by_reason, by_node=by_node, total=sum(by_reason.values())
    )
