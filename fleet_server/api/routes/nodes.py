"""Nodes as the fleet server knows them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from fleet_server.api.deps import CurrentUser, Offset, SessionDep
from fleet_server.crud import get_node, list_nodes, list_sequence_gaps
from fleet_server.models import NodePublic, NodesPublic, SequenceGap

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.get("")
def read_nodes(
    session: SessionDep,
    _user: CurrentUser,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> NodesPublic:
    """Nodes by id."""
    nodes, count = list_nodes(session=session, offset=offset, limit=limit)
    return NodesPublic(data=[NodePublic.model_validate(n) for n in nodes], count=count)


@router.get("/{node_id}")
def read_node(session: SessionDep, _user: CurrentUser, node_id: str) -> NodePublic:
    """One node."""
    node = get_node(session=session, node_id=node_id)
    if node is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no node {node_id!r}")
    return NodePublic.model_validate(node)


@router.get("/{node_id}/sequence-gaps")
def read_sequence_gaps(session: SessionDep, _user: CurrentUser, node_id: str) -> list[SequenceGap]:
    """Runs of event sequence numbers that never arrived from this node."""
    return list_sequence_gaps(session=session, node_id=node_id)
