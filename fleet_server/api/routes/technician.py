"""What the console's technician page needs beyond the commissioning endpoints: finding a node.

The phone page runs `nigehbaan tech commission`'s checklist through the same
endpoints the CLI uses (`/nodes/{id}`, `/nodes/{id}/commands`, replies,
`/events`, `/alerts`, `/nodes/{id}/lifecycle`). Two things had no endpoint:
looking a node up by serial or QR label (`fleet_server.node_lookup`), and the
node's latest power reading as it arrived — the power API serves 10-minute
buckets, too coarse for a technician watching the panel while turning it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import SQLModel

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.crud import get_node
from fleet_server.models import NodePublic, NodesPublic, PowerState
from fleet_server.node_lookup import MAX_MATCHES, find_nodes

router = APIRouter(prefix="/technician", tags=["technician"])


@router.get("/nodes")
def search_nodes(
    session: SessionDep,
    scope: ScopeDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=512,
            description="node id, serial, or the text of a node's QR label (a URL with ?node=)",
        ),
    ],
) -> NodesPublic:
    """Nodes of the caller's scope matching what a technician typed or scanned (at most 20)."""
    nodes = [
        n
        for n in find_nodes(session=session, text=q, limit=MAX_MATCHES)
        if scope.allows(n.district)
    ]
    return NodesPublic(data=[NodePublic.model_validate(n) for n in nodes], count=len(nodes))


class PowerReadingPublic(SQLModel):
    """A node's latest power reading, as it arrived (no averaging)."""

    node_id: str
    ts: datetime | None = None
    received_at: datetime | None = None
    panel_w: float | None = None
    load_w: float | None = None
    battery_v: float | None = None
    battery_soc: float | None = None
    battery_temp_c: float | None = None
    mains_present: bool | None = None
    autonomy_h: float | None = None


@router.get("/nodes/{node_id}/power", responses={404: {"description": "no such node"}})
def read_latest_power(session: SessionDep, scope: ScopeDep, node_id: str) -> PowerReadingPublic:
    """The node's latest power reading; only `node_id` when it has reported none."""
    node = get_node(session=session, node_id=node_id)
    if node is None or not scope.allows(node.district):
        raise not_in_scope(f"node {node_id!r}")
    state = session.get(PowerState, node_id)
    if state is None:
        return PowerReadingPublic(node_id=node_id)
    return PowerReadingPublic.model_validate(state, from_attributes=True)
