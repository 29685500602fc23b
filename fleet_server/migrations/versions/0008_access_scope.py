"""Access scope: users' agency and districts, API tokens for other agencies, purposeful access

`user` gains `agency` and `districts` (JSON list; NULL = every district, so
every user that existed before keeps seeing what it saw). `api_token` holds
the tokens other agencies' systems use (SHA-256 of the secret, scope,
expiry, revocation), `data_access` the record of every view of evidence-like
data with its stated purpose (fleet_server.scope, docs/access.md). Issue 15.

Revision ID: 0008
Revises: 0009
Created: 2026-11-30 14:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0008"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agency", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("districts", sa.JSON(), nullable=True))
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("districts", sa.JSON(), nullable=True),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_sha256"),
    )
    op.create_table(
        "data_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=False),
        sa.Column("purpose_kind", sa.String(length=16), nullable=False),
        sa.Column("purpose_ref", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_access", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_access_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_data_access_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_data_access_object_id"), ["object_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_access", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_access_object_id"))
        batch_op.drop_index(batch_op.f("ix_data_access_actor"))
        batch_op.drop_index(batch_op.f("ix_data_access_at"))
    op.drop_table("data_access")
    op.drop_table("api_token")
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("districts")
        batch_op.drop_column("agency")
