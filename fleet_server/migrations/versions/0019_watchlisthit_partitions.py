"""Monthly partitions of `watchlisthit` on PostgreSQL (the same ULID ranges as `event`)

On PostgreSQL `watchlisthit` becomes a table partitioned by range of its
`event_id` (its watchlist event's ULID), month by month like `event` (0016)
and `plateread` (0017): `event_id` stays the unique key, the two list
indexes (`watchlist_name, received_at`, `node_id, received_at`) become
partitioned indexes. Partitions `watchlisthit_pYYYYMM` from the oldest stored
hit's month to three months ahead, and `watchlisthit_default`; rows are
copied over. `fleet_server.partitions` keeps them (made ahead, dropped with
the events' `event_retention_days`). SQLite is unchanged.
docs/scaling-postgresql.md. Issue 17.

Revision ID: 0019
Revises: 0018
Created: 2026-11-30 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from alembic import op
from sqlalchemy import text

from fleet_server.models.common import utcnow
from fleet_server.partitions import WATCHLISTHIT, ensure_partitions
from proto.ids import ULID_PATTERN, ulid_millis

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_MONTHS_BACK = 120  # older ids than ten years stay in the default partition
_INDEXES = {
    "ix_watchlisthit_watchlist": ["watchlist_name", "received_at"],
    "ix_watchlisthit_node": ["node_id", "received_at"],
}


def _keys_and_indexes() -> None:
    op.execute("ALTER TABLE watchlisthit ADD CONSTRAINT watchlisthit_pkey PRIMARY KEY (event_id)")
    for name, columns in _INDEXES.items():
        op.create_index(name, "watchlisthit", columns)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE watchlisthit RENAME TO watchlisthit_unpartitioned")
    op.execute(
        "ALTER TABLE watchlisthit_unpartitioned "
        "RENAME CONSTRAINT watchlisthit_pkey TO watchlisthit_unpartitioned_pkey"
    )
    for name in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_unpartitioned")
    op.execute(
        "CREATE TABLE watchlisthit (LIKE watchlisthit_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (event_id)"
    )
    _keys_and_indexes()
    op.execute(f'CREATE TABLE "{WATCHLISTHIT.default}" PARTITION OF watchlisthit DEFAULT')
    now = utcnow()
    oldest = bind.execute(
        text("SELECT min(event_id) FROM watchlisthit_unpartitioned WHERE event_id ~ :ulid"),
        {"ulid": ULID_PATTERN},
    ).scalar()
    back = 1
    if oldest is not None:
        at = datetime.fromtimestamp(ulid_millis(str(oldest)) / 1000, tz=timezone.utc)
        back = min(max(1, (now.year - at.year) * 12 + now.month - at.month), _MAX_MONTHS_BACK)
    ensure_partitions(bind, WATCHLISTHIT, now=now, back=back)
    op.execute("INSERT INTO watchlisthit SELECT * FROM watchlisthit_unpartitioned")
    op.execute("DROP TABLE watchlisthit_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE watchlisthit_unpartitioned (LIKE watchlisthit INCLUDING DEFAULTS)")
    op.execute("INSERT INTO watchlisthit_unpartitioned SELECT * FROM watchlisthit")
    op.execute("DROP TABLE watchlisthit CASCADE")
    op.execute("ALTER TABLE watchlisthit_unpartitioned RENAME TO watchlisthit")
    _keys_and_indexes()
