"""Plate reads and camera health: the camera nodes' data, as the server keeps it.

`PlateRead` is one vehicle pass a camera node read (a `plate` event), kept in
its own table beside the event row so searches by plate key, node and time
use indexes instead of parsing event payloads. `NodeCamera` is each camera's
latest health from telemetry (frames, drops, motion, stage timings, plates
per hour, what power shed), one row per camera of a node. The rules live in
`fleet_server.plates`; the ingest handler in `fleet_server.ingest.plate_reads`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow

__all__ = [
    "CameraSummaries",
    "CameraSummary",
    "NodeCamera",
    "NodeCameraPublic",
    "NodeCamerasPublic",
    "PlateRead",
    "PlateReadPublic",
    "PlateReadsPublic",
]


class PlateReadBase(SQLModel):
    """The fields of a plate read the API shows."""

    event_id: str = Field(primary_key=True, max_length=26)
    node_id: str = Field(max_length=64)
    camera_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_type=UtcDateTime, description="server receive time")
    ts: datetime = Field(sa_type=UtcDateTime, description="the node's clock")
    plate: str = Field(max_length=16, description="the text as the node voted it")
    canonical: str = Field(max_length=16, description="the rules' key: searches compare this")
    country: str = Field(default="PK", max_length=2)
    province: str | None = Field(default=None, max_length=32)
    layout: str | None = Field(default=None, max_length=48)
    confidence: float
    frames: int
    crop_sha256: str | None = Field(default=None, max_length=64)


class PlateRead(PlateReadBase, table=True):
    """One vehicle pass read by a camera node (from its `plate` event, same `event_id`)."""

    __tablename__ = "plateread"
    __table_args__ = (
        Index("ix_plateread_canonical_received", "canonical", "received_at"),
        Index("ix_plateread_node_received", "node_id", "received_at"),
        Index("ix_plateread_received_at", "received_at"),
    )


class PlateReadPublic(PlateReadBase):
    """A plate read as the API shows it, with its node's district."""

    district: str | None = None


class PlateReadsPublic(SQLModel):
    """A page of plate reads, newest first; `count` is the whole match."""

    data: list[PlateReadPublic]
    count: int


class NodeCameraBase(SQLModel):
    """A camera's latest health as its node reported it in telemetry."""

    node_id: str = Field(primary_key=True, max_length=64)
    camera_id: str = Field(primary_key=True, max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    frames_in: int = 0
    frames_dropped: int = 0
    motion_ratio: float | None = None
    detector_ms_p50: float | None = None
    detector_ms_p95: float | None = None
    reader_ms_p50: float | None = None
    reader_ms_p95: float | None = None
    plates_per_hour: int | None = None
    shed: str | None = Field(default=None, max_length=16)
    analytics_rate: float | None = None
    fault: str | None = Field(default=None, max_length=64)


class NodeCamera(NodeCameraBase, table=True):
    """One camera of a node (replaced by each telemetry that lists the node's cameras)."""

    __tablename__ = "nodecamera"


class NodeCameraPublic(NodeCameraBase):
    """A camera's health as the API shows it, with its node's district."""

    district: str | None = None


class NodeCamerasPublic(SQLModel):
    """Cameras of the nodes in scope."""

    data: list[NodeCameraPublic]
    count: int


class CameraSummary(SQLModel):
    """One node's cameras in three counts: the node list's camera badge.

    ``stalled`` is a camera with an open fault (lost or stalled stream),
    ``shed`` one the power policy slowed or stopped (and no fault), ``ok``
    the rest; ``faults`` names the open faults, ``updated_at`` is the newest
    telemetry behind the counts.
    """

    node_id: str
    cameras: int
    ok: int
    stalled: int
    shed: int
    faults: list[str] = []
    updated_at: datetime | None = None


class CameraSummaries(SQLModel):
    """Camera summaries of the nodes in scope that report cameras."""

    data: list[CameraSummary]
    count: int
