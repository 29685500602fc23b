"""Watchlists: `watchlist`, `watchlistentry`, `nodewatchlist`, `watchlisthit`

`watchlist` is one list at its current version (purpose, category, owner
agency, districts/sites scope, expiry); `watchlistentry` its plates
(canonical key) and person entries; `nodewatchlist` the version each node
says it holds; `watchlisthit` the hits nodes reported with the alert each
opened and the operator's confirm/reject decision. fleet_server.watchlists,
docs/watchlists.md. Issue 14.

Revision ID: 0011
Revises: 0010
Created: 2026-11-30 14:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watchlist",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=120), nullable=False),
        sa.Column("owner_agency", sa.String(length=120), nullable=False),
        sa.Column("districts", sa.JSON(), nullable=False),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "watchlistentry",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("watchlist_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("plate_key", sa.String(length=16), nullable=True),
        sa.Column("note", sa.String(length=120), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["watchlist_id"], ["watchlist.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_watchlistentry_watchlist", "watchlistentry", ["watchlist_id"])
    op.create_table(
        "nodewatchlist",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("watchlist_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reported_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "watchlist_name"),
    )
    op.create_table(
        "watchlisthit",
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("alert_id", sa.String(length=26), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("watchlist_name", sa.String(length=64), nullable=False),
        sa.Column("watchlist_version", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=8), nullable=False),
        sa.Column("match", sa.String(length=16), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("plate", sa.String(length=16), nullable=True),
        sa.Column("listed", sa.String(length=16), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decision_note", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_watchlisthit_watchlist", "watchlisthit", ["watchlist_name", "received_at"])
    op.create_index("ix_watchlisthit_node", "watchlisthit", ["node_id", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_watchlisthit_node", table_name="watchlisthit")
    op.drop_index("ix_watchlisthit_watchlist", table_name="watchlisthit")
    op.drop_table("watchlisthit")
    op.drop_table("nodewatchlist")
    op.drop_index("ix_watchlistentry_watchlist", table_name="watchlistentry")
    op.drop_table("watchlistentry")
    op.drop_table("watchlist")
