"""Watchlist enrolment photos and delivered bundles: `watchlistphoto`, `watchlistbundle`

`watchlistphoto` is one enrolment photo of a person entry (kept by SHA-256
in the photo store) with the face template the node's own code computed
from it, the model's name and SHA-256, and the quality figures;
`watchlistbundle` is each signed bundle as delivered, which nodes fetch
over HTTPS by its SHA-256. fleet_server.watchlists, docs/watchlists.md.
Issue 14.

Revision ID: 0013
Revises: 0012
Created: 2026-11-30 16:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watchlistphoto",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("entry_id", sa.String(length=26), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["watchlistentry.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("entry_id", "sha256", name="uq_watchlistphoto_entry_sha256"),
    )
    op.create_index("ix_watchlistphoto_entry", "watchlistphoto", ["entry_id"])
    op.create_table(
        "watchlistbundle",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("watchlist_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_index(
        "ix_watchlistbundle_watchlist", "watchlistbundle", ["watchlist_name", "version"]
    )


def downgrade() -> None:
    op.drop_index("ix_watchlistbundle_watchlist", table_name="watchlistbundle")
    op.drop_table("watchlistbundle")
    op.drop_index("ix_watchlistphoto_entry", table_name="watchlistphoto")
    op.drop_table("watchlistphoto")
