"""Events as received from nodes, keyed by their ULID so redeliveries are no-ops."""

from __future__ import annotations

from datetime import datetime

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


class EventsPublic(SQLModel):
    """A page of events."""

    data: list[EventPublic]
    count: int
