"""The snapshots a panic alert asked nearby camera nodes for (`fleet_server.alerting.snapshots`).

One `AlertSnapshot` row per camera node asked: which alert, which node, why
that node (same site as the pillar, or within the radius) and how far, when
it was asked and until when the command is valid. The node's answer is its
`NodeReply` to the same request id (the SHA-256 of each stored still, or why
a camera had none).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from fleet_server.models.common import UtcDateTime, utcnow

__all__ = ["AlertSnapshot"]


class AlertSnapshot(SQLModel, table=True):
    """A `snapshot` command sent to one camera node for one alert."""

    __tablename__ = "alertsnapshot"

    request_id: str = Field(primary_key=True, max_length=26)
    alert_id: str = Field(index=True, max_length=26)
    node_id: str = Field(max_length=64)
    reason: str = Field(max_length=16, description="same_site or nearby")
    distance_m: float | None = None
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
