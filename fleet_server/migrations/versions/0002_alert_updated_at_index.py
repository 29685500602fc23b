"""Index alert.updated_at for the feed replay

`/api/v1/stream/alerts` replays alerts changed since a client's cursor
(`fleet_server.feed_replay`), a range scan on `updated_at`.

Revision ID: 0002
Revises: 0001
Created: 2026-11-22 21:43:58.202287
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_updated_at", ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_updated_at")
