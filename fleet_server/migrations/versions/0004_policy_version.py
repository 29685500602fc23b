"""An explicit version for what escalation reads (policies, levels, users)

`policyversion` holds one row whose `version` every change to a policy, a
level or a user bumps in its own transaction; the ingest worker and the
timer loop reload their cached policies when it moved. It replaces
process-local SQLAlchemy session listeners, which did not see changes made
by another process (the CLI, a second server).

Revision ID: 0004
Revises: 0003
Created: 2026-11-30 13:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "policyversion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("policyversion")
