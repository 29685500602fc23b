"""Every escalation policy change recorded: who, when, the policy before and after

`escalationpolicychange` holds one row per change made through
`fleet_server.alerting.changes` (created, replaced, deleted), written in the
change's own transaction, with how many open alerts were re-planned. Issue 11:
a typo that silenced panic escalation left no trace of who made it.

Revision ID: 0005
Revises: 0004
Created: 2026-11-30 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleet_server.models.common

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "escalationpolicychange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("at", fleet_server.models.common.UtcDateTime(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("replanned", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("escalationpolicychange", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_escalationpolicychange_policy_name"), ["policy_name"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("escalationpolicychange", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escalationpolicychange_policy_name"))
    op.drop_table("escalationpolicychange")
