"""Presence by silence and the node's clock (issue 11, items 2 and 3)

`node` learns how often each node reports (`telemetry_interval_s`, from the
node's own stamps in `last_telemetry_ts`) for the silence timeout, and keeps
its clock offset (`clock_offset_s`, the median of `clock_samples`) and a
count of events whose device time was implausible. `event.ts_implausible`
flags such an event; its `ts` is kept as evidence.

Revision ID: 0006
Revises: 0005
Created: 2026-11-30 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.add_column(sa.Column("telemetry_interval_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_telemetry_ts", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("clock_offset_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("clock_samples", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("implausible_device_times", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ts_implausible", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("ts_implausible")
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.drop_column("implausible_device_times")
        batch_op.drop_column("clock_samples")
        batch_op.drop_column("clock_offset_s")
        batch_op.drop_column("last_telemetry_ts")
        batch_op.drop_column("telemetry_interval_s")
