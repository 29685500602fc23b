"""Monthly partitions of `plateread` on PostgreSQL (the same ULID ranges as `event`)

On PostgreSQL `plateread` becomes a table partitioned by range of its
`event_id` (its plate event's ULID), month by month like `event` (0016):
`event_id` stays the unique key, the three search/retention indexes become
partitioned indexes. Partitions `plateread_pYYYYMM` from the oldest stored
read's month to three months ahead, and `plateread_default`; rows are
copied over. `fleet_server.partitions` keeps them (made ahead, dropped after
`plate_retention_days`). SQLite is unchanged. docs/scaling-postgresql.md.
Issue 17.

Revision ID: 0017
Revises: 0016
Created: 2026-11-30 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from alembic import op
from sqlalchemy import text

from fleet_server.models.common import utcnow
from fleet_server.partitions import PLATEREAD, ensure_partitions
from proto.ids import ULID_PATTERN, ulid_millis

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_MONTHS_BACK = 120  # older ids than ten years stay in the default partition
_INDEXES = {
    "ix_plateread_canonical_received": ["canonical", "received_at"],
    "ix_plateread_node_received": ["node_id", "received_at"],
    "ix_plateread_received_at": ["received_at"],
}


def _keys_and_indexes() -> None:
    op.execute("ALTER TABLE plateread ADD CONSTRAINT plateread_pkey PRIMARY KEY (event_id)")
    for name, columns in _INDEXES.items():
        op.create_index(name, "plateread", columns)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE plateread RENAME TO plateread_unpartitioned")
    op.execute(
        "ALTER TABLE plateread_unpartitioned "
        "RENAME CONSTRAINT plateread_pkey TO plateread_unpartitioned_pkey"
    )
    for name in _INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_unpartitioned")
    op.execute(
        "CREATE TABLE plateread (LIKE plateread_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (event_id)"
    )
    _keys_and_indexes()
    op.execute(f'CREATE TABLE "{PLATEREAD.default}" PARTITION OF plateread DEFAULT')
    now = utcnow()
    oldest = bind.execute(
        text("SELECT min(event_id) FROM plateread_unpartitioned WHERE event_id ~ :ulid"),
        {"ulid": ULID_PATTERN},
    ).scalar()
    back = 1
    if oldest is not None:
        at = datetime.fromtimestamp(ulid_millis(str(oldest)) / 1000, tz=timezone.utc)
        back = min(max(1, (now.year - at.year) * 12 + now.month - at.month), _MAX_MONTHS_BACK)
    ensure_partitions(bind, PLATEREAD, now=now, back=back)
    op.execute("INSERT INTO plateread SELECT * FROM plateread_unpartitioned")
    op.execute("DROP TABLE plateread_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE plateread_unpartitioned (LIKE plateread INCLUDING DEFAULTS)")
    op.execute("INSERT INTO plateread_unpartitioned SELECT * FROM plateread")
    op.execute("DROP TABLE plateread CASCADE")
    op.execute("ALTER TABLE plateread_unpartitioned RENAME TO plateread")
    _keys_and_indexes()
