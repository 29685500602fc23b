"""Plate reads and camera health: `plateread` and `nodecamera`

`plateread` holds one row per plate event a camera node sent (the event row
stays too), with its canonical key indexed for search with the receive time,
and its node and receive time for the node's recent reads and retention.
`nodecamera` holds each camera's latest health from telemetry (frames,
drops, motion, stage timings, plates per hour, what power shed, fault).
fleet_server.plates, docs/anpr.md. Issue 12.

Revision ID: 0010
Revises: 0008
Created: 2026-11-30 14:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plateread",
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("plate", sa.String(length=16), nullable=False),
        sa.Column("canonical", sa.String(length=16), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("province", sa.String(length=32), nullable=True),
        sa.Column("layout", sa.String(length=48), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("crop_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_plateread_canonical_received", "plateread", ["canonical", "received_at"])
    op.create_index("ix_plateread_node_received", "plateread", ["node_id", "received_at"])
    op.create_index("ix_plateread_received_at", "plateread", ["received_at"])
    op.create_table(
        "nodecamera",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("frames_in", sa.Integer(), nullable=False),
        sa.Column("frames_dropped", sa.Integer(), nullable=False),
        sa.Column("motion_ratio", sa.Float(), nullable=True),
        sa.Column("detector_ms_p50", sa.Float(), nullable=True),
        sa.Column("detector_ms_p95", sa.Float(), nullable=True),
        sa.Column("reader_ms_p50", sa.Float(), nullable=True),
        sa.Column("reader_ms_p95", sa.Float(), nullable=True),
        sa.Column("plates_per_hour", sa.Integer(), nullable=True),
        sa.Column("shed", sa.String(length=16), nullable=True),
        sa.Column("analytics_rate", sa.Float(), nullable=True),
        sa.Column("fault", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "camera_id"),
    )


def downgrade() -> None:
    op.drop_table("nodecamera")
    op.drop_index("ix_plateread_received_at", table_name="plateread")
    op.drop_index("ix_plateread_node_received", table_name="plateread")
    op.drop_index("ix_plateread_canonical_received", table_name="plateread")
    op.drop_table("plateread")
