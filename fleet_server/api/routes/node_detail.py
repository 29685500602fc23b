"""`/node-detail/{node_id}`: everything the console's node page shows, in one answer."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.node_detail import NodeDetailPublic, NodeNotFound, node_detail

router = APIRouter(prefix="/node-detail", tags=["nodes"])


@router.get("/{node_id}")
def read_node_detail(session: SessionDep, scope: ScopeDep, node_id: str) -> NodeDetailPublic:
    """Identity, certificate, health, power, online history, alerts, events, commands,
    enrollment history."""
    # Outside the caller's districts: the same 404 as a node that does not exist.
    if not scope.allows_node(session, node_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="node not found")
    try:
        return node_detail(session=session, node_id=node_id)
    except NodeNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="node not found") from None
