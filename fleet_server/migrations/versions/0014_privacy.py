"""Privacy at the edge: `privacypolicyversion`, `nodeprivacy`, `privatecamera`

`privacypolicyversion` holds every version of every node's privacy policy
(per camera: masks, and a private camera's agreement), never changed once
written; `nodeprivacy` the version each node says it applies (telemetry);
`privatecamera` a privately owned camera's agreement as it stands and when
admins were warned of its expiry. fleet_server.privacy, docs/privacy.md.
Issue 15.

Revision ID: 0014
Revises: 0013
Created: 2026-11-30 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacypolicyversion",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cameras", sa.JSON(), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("node_id", "version", name="uq_privacypolicyversion_node_version"),
    )
    op.create_index("ix_privacypolicyversion_node", "privacypolicyversion", ["node_id"])
    op.create_table(
        "nodeprivacy",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reported_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "privatecamera",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("agreement", sa.String(length=120), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("allow", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("warned_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "camera_id"),
    )


def downgrade() -> None:
    op.drop_table("privatecamera")
    op.drop_table("nodeprivacy")
    op.drop_index("ix_privacypolicyversion_node", table_name="privacypolicyversion")
    op.drop_table("privacypolicyversion")
