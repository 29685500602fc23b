"""Events as received from nodes, keyed by their ULID so redeliveries are no-ops."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import false
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow


class Event(SQLModel, table=True):
    """One event from a node's outbox; `event_id` is the primary key (idempotency)."""

    event_id: str = Field(primary_key=True, max_length=26)
    node_id: str = Field(index=True, max_length=64)
    type: str = Field(max_length=32)
    seq: int
    ts: datetime = Field(sa_type=UtcDateTime, description="node clock")
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    payload: str = Field(description="canonical JSON as received")
    alert_id: str | None = Field(default=None, index=True, max_length=26)
    # `ts` could not be true (before the node existed, or too far from the receive
    # time); it is kept as evidence, and response times leave it out.
    ts_implausible: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class EventPublic(SQLModel):
    """An event as the API shows it; `payload` is the canonical JSON the node sent."""

    event_id: str
    node_id: str
    type: str
    seq: int
    ts: datetime
    received_at: datetime
    alert_id: str | None
    payload: str
    ts_implausible: bool = Field(
        default=False, description="`ts` (node clock) could not be true; `received_at` counts"
    )


class EventsPublic(SQLModel):
    """A page of events."""

    data: list[EventPublic]
    count: int
