"""Events as received from nodes: what auditors check and benchmarks count.

Each row is the canonical JSON the node sent, keyed by its event id, with the
alert it was filed under; a redelivered event never appears twice. Only
events of nodes in the caller's scope are listed or counted (docs/access.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, func, select

from fleet_server.api.deps import Offset, SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.models import Event, EventPublic, EventsPublic
from proto.messages import EVENT_MODELS

router = APIRouter(prefix="/events", tags=["events"])

EventType = Annotated[
    str | None, Query(pattern="^(" + "|".join(EVENT_MODELS) + ")$", description="event type")
]


@router.get("")
def read_events(
    session: SessionDep,
    scope: ScopeDep,
    type: EventType = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    alert_id: Annotated[str | None, Query(max_length=26)] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> EventsPublic:
    """Events oldest first, filtered by type, node or alert."""
    query = scope.filter_nodes(select(Event), Event.node_id)
    count_query = scope.filter_nodes(select(func.count()).select_from(Event), Event.node_id)
    for column, value in ((Event.type, type), (Event.node_id, node_id), (Event.alert_id, alert_id)):
        if value is not None:
            query = query.where(column == value)
            count_query = count_query.where(column == value)
    ordered = query.order_by(col(Event.received_at), col(Event.event_id))
    events = session.exec(ordered.offset(offset).limit(limit)).all()
    count = int(session.exec(count_query).one())
    return EventsPublic(data=[EventPublic.model_validate(e) for e in events], count=count)
