"""What ingest refused and what it noticed missing: rejection counters, sequence gaps."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow


class IngestRejection(SQLModel, table=True):
    """How many messages were refused for `reason` from `node_id` ("" when unknown)."""

    reason: str = Field(primary_key=True, max_length=64)
    node_id: str = Field(primary_key=True, max_length=64)
    count: int = 0
    last_detail: str = Field(default="", max_length=1000)
    last_topic: str = Field(default="", max_length=256)
    last_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class IngestRejectionPublic(SQLModel):
    """One counter as the API shows it."""

    reason: str
    node_id: str
    count: int
    last_detail: str
    last_topic: str
    last_at: datetime


class IngestRejectionsPublic(SQLModel):
    """All counters plus totals by reason and by node."""

    data: list[IngestRejectionPublic]
    by_reason: dict[str, int]
    by_node: dict[str, int]
    total: int


class SequenceGap(SQLModel, table=True):
    """Events `first_missing`..`last_missing` of a node never arrived (yet)."""

    id: int | None = Field(default=None, primary_key=True)
    node_id: str = Field(index=True, max_length=64)
    first_missing: int
    last_missing: int
    detected_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    event_id: str = Field(max_length=26, description="the event that revealed the gap")
