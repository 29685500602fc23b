"""Watchlists, their entries, the versions nodes hold, and the hits a person must confirm.

`Watchlist` is one list (purpose, category, owner agency, scope, expiry) at
a `version` that grows with every change; `WatchlistEntry` is a plate
(canonical key) or a person, whose enrolment photos are `WatchlistPhoto`
rows (the photo kept by SHA-256 in the photo store, its face template
computed by the node's own code, the quality figures). `WatchlistBundle` is
each signed bundle as delivered, served to nodes over HTTPS by SHA-256.
`NodeWatchlist` is the version each node says it holds (telemetry or the
command's reply), for the list of nodes that lag. `WatchlistHit` is one hit
a node reported, with the alert it opened and the operator's decision
(confirmed or rejected; rejections are the false-accept figures). The rules
live in `fleet_server.watchlists`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import StringConstraints, field_validator
from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, new_id, utcnow
from proto.plates import normalise_plate
from proto.watchlist import Category

__all__ = [
    "HitDecisionIn",
    "NodeWatchlist",
    "Watchlist",
    "WatchlistBundle",
    "WatchlistEntriesIn",
    "WatchlistEntry",
    "WatchlistEntryIn",
    "WatchlistHit",
    "WatchlistIn",
    "WatchlistLag",
    "WatchlistPhoto",
]

NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ScopeName = Annotated[str, StringConstraints(pattern=NAME)]
PlaceName = Annotated[str, StringConstraints(min_length=1, max_length=64)]  # as nodes carry them


class WatchlistIn(SQLModel):
    """What an authorised user sends to create or change a watchlist."""

    name: ScopeName = Field(description="stable id, quoted by nodes in their hits")
    category: Category
    purpose: str = Field(min_length=1, max_length=120)
    owner_agency: str = Field(min_length=1, max_length=120)
    districts: list[PlaceName] = Field(default_factory=list, max_length=256)
    sites: list[PlaceName] = Field(default_factory=list, max_length=1024)
    expires_at: datetime

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("expires_at needs a UTC offset (for example a trailing Z)")
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("expires_at is out of range") from None


class Watchlist(SQLModel, table=True):
    """One watchlist at its current version."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    name: str = Field(max_length=64, unique=True)
    category: str = Field(max_length=32)
    purpose: str = Field(max_length=120)
    owner_agency: str = Field(max_length=120)
    districts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sites: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime = Field(sa_type=UtcDateTime)
    version: int = 1
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WatchlistEntryIn(SQLModel):
    """A plate (its text; the server keeps the canonical key) or a person (photos added after)."""

    kind: Literal["plate", "person"] = "plate"
    plate: str | None = Field(default=None, max_length=32)
    note: str | None = Field(default=None, max_length=120)

    @field_validator("plate")
    @classmethod
    def _plate_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = normalise_plate(value)
        if not 1 <= len(key) <= 16:
            raise ValueError("a plate needs 1 to 16 letters or digits")
        return key


class WatchlistEntriesIn(SQLModel):
    """Many entries at once (a hotlist imported from another system): one version step."""

    entries: list[WatchlistEntryIn] = Field(min_length=1, max_length=20_000)


class WatchlistEntry(SQLModel, table=True):
    """A plate (canonical key) or a person entry of a watchlist."""

    __tablename__ = "watchlistentry"
    __table_args__ = (Index("ix_watchlistentry_watchlist", "watchlist_id"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    watchlist_id: str = Field(max_length=26, foreign_key="watchlist.id")
    kind: str = Field(max_length=8)
    plate_key: str | None = Field(default=None, max_length=16)
    note: str | None = Field(default=None, max_length=120)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WatchlistPhoto(SQLModel, table=True):
    """One enrolment photo of a person entry and the face template computed from it."""

    __tablename__ = "watchlistphoto"
    __table_args__ = (
        UniqueConstraint("entry_id", "sha256", name="uq_watchlistphoto_entry_sha256"),
        Index("ix_watchlistphoto_entry", "entry_id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    entry_id: str = Field(max_length=26, foreign_key="watchlistentry.id")
    sha256: str = Field(max_length=64, description="the photo's SHA-256 (its name in the store)")
    size: int
    template: str = Field(sa_column=Column(Text, nullable=False), description="base64 <f4")
    dim: int
    model: str = Field(max_length=200, description="embedder name and version")
    model_sha256: str = Field(max_length=64)
    quality: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    uploaded_by: str = Field(max_length=64)
    uploaded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WatchlistBundle(SQLModel, table=True):
    """A signed bundle as delivered (bytes as served), fetched by nodes by its SHA-256."""

    __tablename__ = "watchlistbundle"
    __table_args__ = (Index("ix_watchlistbundle_watchlist", "watchlist_name", "version"),)

    sha256: str = Field(primary_key=True, max_length=64)
    watchlist_name: str = Field(max_length=64)
    version: int
    size: int
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class NodeWatchlist(SQLModel, table=True):
    """The version of a watchlist a node says it holds."""

    __tablename__ = "nodewatchlist"

    node_id: str = Field(primary_key=True, max_length=64)
    watchlist_name: str = Field(primary_key=True, max_length=64)
    version: int
    reported_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WatchlistLag(SQLModel):
    """A node in a watchlist's scope that holds an older version, or none."""

    node_id: str
    district: str | None
    site_id: str | None
    held: int | None
    current: int
    key_renewed: bool = Field(
        default=False,
        description="holds the current version, but its key changed since the face "
        "templates were sealed: it needs the list delivered again",
    )


class WatchlistHit(SQLModel, table=True):
    """A hit a node reported, the alert it opened, and what an operator decided."""

    __tablename__ = "watchlisthit"
    __table_args__ = (
        Index("ix_watchlisthit_watchlist", "watchlist_name", "received_at"),
        Index("ix_watchlisthit_node", "node_id", "received_at"),
    )

    event_id: str = Field(primary_key=True, max_length=26)
    alert_id: str | None = Field(default=None, max_length=26)
    node_id: str = Field(max_length=64)
    watchlist_name: str = Field(max_length=64)
    watchlist_version: int
    entry_id: str = Field(max_length=64)
    subject: str = Field(max_length=8)
    match: str = Field(max_length=16)
    camera_id: str = Field(max_length=64)
    plate: str | None = Field(default=None, max_length=16)
    listed: str | None = Field(default=None, max_length=16)
    confidence: float
    ts: datetime = Field(sa_type=UtcDateTime)
    received_at: datetime = Field(sa_type=UtcDateTime)
    decision: str = Field(default="pending", max_length=16)
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    decision_note: str | None = Field(default=None, max_length=500)


class HitDecisionIn(SQLModel):
    """An operator's decision on a hit, before anyone is dispatched."""

    decision: Literal["confirmed", "rejected"]
    note: str | None = Field(default=None, max_length=500)


def public(row: SQLModel) -> dict[str, Any]:
    """A row as JSON-ready data."""
    return row.model_dump(mode="json")
