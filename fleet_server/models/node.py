"""Nodes: the pillars and camera boxes in the field, as the server knows them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON
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
    # Presence (fleet_server.presence): how often the node reports, from its own
    # clock, for the silence timeout.
    telemetry_interval_s: float | None = None
    last_telemetry_ts: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # The node's clock (fleet_server.device_clock): device time - receive time,
    # the median of the recent samples in `clock_samples`; events whose device
    # time is implausible are counted in `implausible_device_times`.
    clock_offset_s: float | None = None
    clock_samples: list[float] | None = Field(default=None, sa_type=JSON)
    implausible_device_times: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


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
    telemetry_interval_s: float | None = Field(
        default=None, description="seconds between the node's telemetry reports (its clock)"
    )
    clock_offset_s: float | None = Field(
        default=None,
        description="node clock minus server receive time, median of recent fresh messages; "
        "negative: the node's clock is behind",
    )
    implausible_device_times: int = Field(
        default=0, description="events whose device time could not be true (docs/panic-flow.md)"
    )


class NodesPublic(SQLModel):
    """A page of nodes."""

    data: list[NodePublic]
    count: int
