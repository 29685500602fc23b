"""What the console's technician page needs beyond the commissioning endpoints: finding a node.

The phone page runs `nigehbaan tech commission`'s checklist through the same
endpoints the CLI uses (`/nodes/{id}`, `/nodes/{id}/commands`, replies,
`/events`, `/alerts`, `/nodes/{id}/lifecycle`); only looking a node up by
serial or QR label had no endpoint, so it is here (`fleet_server.node_lookup`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import CurrentUser, SessionDep
from fleet_server.models import NodePublic, NodesPublic
from fleet_server.node_lookup import MAX_MATCHES, find_nodes

router = APIRouter(prefix="/technician", tags=["technician"])


@router.get("/nodes")
def search_nodes(
    session: SessionDep,
    _user: CurrentUser,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=512,
            description="node id, serial, or the text of a node's QR label (a URL with ?node=)",
        ),
    ],
) -> NodesPublic:
    """Nodes matching what a technician typed or scanned, best match first (at most 20)."""
    nodes = find_nodes(session=session, text=q, limit=MAX_MATCHES)
    return NodesPublic(data=[NodePublic.model_validate(n) for n in nodes], count=len(nodes))
