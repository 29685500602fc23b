"""Events as received from nodes: what auditors check and benchmarks count.

Each row is the canonical JSON the node sent, keyed by its event id, with the
alert it was filed under; a redelivered event never appears twice.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import CurrentUser, Offset, SessionDep
from fleet_server.crud import list_events
from fleet_server.models import EventPublic, EventsPublic
from proto.messages import EVENT_MODELS

router = APIRouter(prefix="/events", tags=["events"])

EventType = Annotated[
    str | None, Query(pattern="^(" + "|".join(EVENT_MODELS) + ")$", description="event type")
]


@router.get("")
def read_events(
    session: SessionDep,
    _user: CurrentUser,
    type: EventType = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    alert_id: Annotated[str | None, Query(max_length=26)] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> EventsPublic:
    """Events oldest first, filtered by type, node or alert."""
    events, count = list_events(
        session=session,
        event_type=type,
        node_id=node_id,
        alert_id=alert_id,
        offset=offset,
        limit=limit,
    )
    return EventsPublic(data=[EventPublic.model_validate(e) for e in events], count=count)
