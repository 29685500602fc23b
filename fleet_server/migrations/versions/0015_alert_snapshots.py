"""Panic snapshot pull: `alertsnapshot`

One row per camera node a panic alert asked for a still (which alert, which
node, why: same site or within the radius, how far, when, valid until);
the node's answer is its `nodereply` to the same request id.
fleet_server.alerting.snapshots, docs/watchlists-operations.md. Issue 14.

Revision ID: 0015
Revises: 0014
Created: 2026-11-30 16:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alertsnapshot",
        sa.Column("request_id", sa.String(length=26), nullable=False),
        sa.Column("alert_id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=True),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_alertsnapshot_alert_id", "alertsnapshot", ["alert_id"])


def downgrade() -> None:
    op.drop_index("ix_alertsnapshot_alert_id", table_name="alertsnapshot")
    op.drop_table("alertsnapshot")
