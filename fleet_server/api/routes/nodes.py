"""Nodes as the fleet server knows them, within the caller's scope (docs/access.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, func, select

from fleet_server.api.deps import Offset, SessionDep
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.crud import get_node, list_sequence_gaps
from fleet_server.models import Node, NodePublic, NodesPublic, SequenceGap

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.get("")
def read_nodes(
    session: SessionDep,
    scope: ScopeDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> NodesPublic:
    """Nodes by id; `count` is how many are in the caller's scope."""
    count = session.exec(scope.filter(select(func.count()).select_from(Node), Node.district)).one()
    query = scope.filter(select(Node), Node.district).order_by(col(Node.node_id))
    nodes = session.exec(query.offset(offset).limit(limit)).all()
    return NodesPublic(data=[NodePublic.model_validate(n) for n in nodes], count=int(count))


@router.get("/{node_id}")
def read_node(session: SessionDep, scope: ScopeDep, node_id: str) -> NodePublic:
    """One node (404 outside the caller's scope, as for a node that does not exist)."""
    node = get_node(session=session, node_id=node_id)
    if node is None or not scope.allows(node.district):
        raise not_in_scope(f"node {node_id!r}")
    return NodePublic.model_validate(node)


@router.get("/{node_id}/sequence-gaps")
def read_sequence_gaps(session: SessionDep, scope: ScopeDep, node_id: str) -> list[SequenceGap]:
    """Runs of event sequence numbers that never arrived from this node."""
    if not scope.allows_node(session, node_id):
        raise not_in_scope(f"node {node_id!r}")
    return list_sequence_gaps(session=session, node_id=node_id)
