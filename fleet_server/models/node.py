"""Nodes: the pillars and camera boxes in the field, as the server knows them."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow


class NodeBase(SQLModel):
    """What a node tells us about itself in its birth message."""

    node_id: str = Field(primary_key=True, max_length=64)
    serial: str | None = Field(default=None, max_length=64)
    hardware: str | None = Field(default=None, max_length=120)
    firmware_version: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64, index=True)
    district: str | None = Field(default=None, max_length=64, index=True)
    lat: float | None = None
    lon: float | None = None


class Node(NodeBase, table=True):
    """A node row; created on its first birth (or first message of any kind)."""

    online: bool = False
    bd_seq: int | None = None
    last_seq: int | None = Field(default=None, description="highest event seq received")
    # Set when an offline status arrives; the node is marked offline only if no
    # online follows within the grace period (a reconnect is not an outage).
    offline_pending_since: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)
    last_seen_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    online_changed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    test_mode: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # docs/provisioning.md: registered → provisioned → commissioned → active → decommissioned
    lifecycle: str = Field(default="registered", max_length=16, index=True)
    lifecycle_changed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class NodePublic(NodeBase):
    """A node as the API shows it."""

    online: bool
    bd_seq: int | None
    last_seq: int | None
    last_seen_at: datetime | None
    online_changed_at: datetime | None
    offline_pending_since: datetime | None
    test_mode: bool
    created_at: datetime
    lifecycle: str
    lifecycle_changed_at: datetime | None


class NodesPublic(SQLModel):
    """A page of nodes."""

    data: list[NodePublic]
    count: int
