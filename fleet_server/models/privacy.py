"""Privacy at the edge: each node's versioned privacy policy, the version it applies, private cams.

`PrivacyPolicyVersion` is one version of one node's policy (per camera: the
privacy masks, and for a private camera its agreement), never changed once
written: every change is a new row with who made it and why, and the
change is in the audit log. `NodePrivacy` is the version the node says it
applies (telemetry ``privacy_version``), for the list of nodes that lag.
`PrivateCamera` is a privately owned camera's agreement as it stands (owner
organisation, agreement reference and expiry, the data classes it may
contribute) and when admins were warned of its expiry. The rules live in
`fleet_server.privacy`; docs/privacy.md.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import StringConstraints, field_validator
from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, new_id, utcnow
from fleet_server.privacy.sources import source_problem

__all__ = [
    "DATA_CLASSES",
    "MasksIn",
    "NodePrivacy",
    "PrivacyPolicyVersion",
    "PrivateCamera",
    "PrivateCameraIn",
]

DATA_CLASSES = ("live_view", "plates", "faces")
DataClass = Literal["live_view", "plates", "faces"]
CameraName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]
Coordinate = Annotated[float, Field(ge=0.0, le=1.0)]
MAX_MASKS = 16  # per camera, as the node takes them (edge_agent.camera.privacy)
MAX_POINTS = 32  # per polygon
Polygon = Annotated[list[tuple[Coordinate, Coordinate]], Field(min_length=3, max_length=MAX_POINTS)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a UTC offset (for example a trailing Z)")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range") from None


class MasksIn(SQLModel):
    """One camera's privacy masks as drawn in the console: polygons in fractions of the frame."""

    masks: list[Polygon] = Field(default_factory=list, max_length=MAX_MASKS)
    reason: Reason = Field(description="why the masks change (recorded with the version)")


class CameraStandardsIn(SQLModel):
    """Minimums a third-party camera must meet on connect (the node's standards check)."""

    min_width: int = Field(default=1280, ge=16, le=8192)
    min_height: int = Field(default=720, ge=16, le=8192)
    min_fps: float = Field(default=10.0, ge=0.0, le=240.0)
    max_clock_skew_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    sample_frames: int = Field(default=50, ge=2, le=1000)
    sample_s: float = Field(default=10.0, gt=0.0, le=120.0)


class PrivateCameraIn(SQLModel):
    """A privately owned camera's agreement: who owns it, under what, until when, for what."""

    owner: str = Field(min_length=2, max_length=120, description="the owner organisation")
    agreement: str = Field(min_length=2, max_length=120, description="the agreement's reference")
    expires_at: datetime = Field(description="no data from the camera after this time")
    allow: list[DataClass] = Field(
        default_factory=list, max_length=3, description="live_view, plates, faces"
    )
    reason: Reason = Field(description="why (recorded with the version)")
    source: str | None = Field(
        default=None, max_length=500,
        description="a third-party stream the node opens: an RTSP/HTTP URL, an ONVIF device "
        "(onvif://user:password@host[:port][/profile]; the node asks it for its stream and "
        "clock) or /dev/videoN; credentials allowed, never shown back; omitted: the source "
        "held stays",
    )  # fmt: skip
    standards: CameraStandardsIn | None = Field(
        default=None, description="minimums checked on every connect; none: no check"
    )

    @field_validator("expires_at")
    @classmethod
    def _expiry_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        problem = source_problem(value) if value is not None else None
        if problem is not None:  # never repeats the source: it may carry a password
            raise ValueError(problem)
        return value

    @field_validator("allow")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=DATA_CLASSES.index)


class PrivacyPolicyVersion(SQLModel, table=True):
    """One version of one node's privacy policy (immutable; a change is a new version)."""

    __tablename__ = "privacypolicyversion"
    __table_args__ = (
        UniqueConstraint("node_id", "version", name="uq_privacypolicyversion_node_version"),
        Index("ix_privacypolicyversion_node", "node_id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=26)
    node_id: str = Field(max_length=64)
    version: int
    cameras: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    changed_by: str = Field(max_length=64)
    reason: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class NodePrivacy(SQLModel, table=True):
    """The privacy policy version a node says it applies."""

    __tablename__ = "nodeprivacy"

    node_id: str = Field(primary_key=True, max_length=64)
    version: int
    reported_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class PrivateCamera(SQLModel, table=True):
    """A privately owned camera's agreement as it stands."""

    __tablename__ = "privatecamera"

    node_id: str = Field(primary_key=True, max_length=64)
    camera_id: str = Field(primary_key=True, max_length=64)
    owner: str = Field(max_length=120)
    agreement: str = Field(max_length=120)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    allow: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_by: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    warned_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
