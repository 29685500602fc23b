"""Record when each escalation step was due, beside when it fired

`alertescalation.due_at` is the alert's `next_escalation_at` as the timer
found it, so "on time after a restart" is read off the server's own record
(fired `at` minus `due_at`) rather than guessed from wall clocks.

Revision ID: 0003
Revises: 0002
Created: 2026-11-30 13:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alertescalation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alertescalation", schema=None) as batch_op:
        batch_op.drop_column("due_at")
