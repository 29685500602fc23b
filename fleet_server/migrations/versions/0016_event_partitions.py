"""Monthly partitions of `event` on PostgreSQL (declarative, by ULID range)

On PostgreSQL `event` becomes a table partitioned by range of `event_id`:
ULIDs begin with their creation time, so each month is one range and
`event_id` stays the table's unique key (a redelivery is still a no-op).
Partitions `event_pYYYYMM` from the oldest stored event's month to three
months ahead, and `event_default` for ids outside every range; rows are
copied over. `fleet_server.partitions` keeps them (made ahead, dropped for
retention). SQLite is unchanged. docs/scaling-postgresql.md. Issue 17.

Revision ID: 0016
Revises: 0015
Created: 2026-11-30 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from alembic import op
from sqlalchemy import text

from fleet_server.models.common import utcnow
from fleet_server.partitions import DEFAULT_PARTITION, ensure_event_partitions
from proto.ids import ULID_PATTERN, ulid_millis

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_MONTHS_BACK = 120  # older ids than ten years stay in the default partition


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE event RENAME TO event_unpartitioned")
    op.execute(
        "ALTER TABLE event_unpartitioned RENAME CONSTRAINT event_pkey TO event_unpartitioned_pkey"
    )
    op.execute("ALTER INDEX ix_event_node_id RENAME TO ix_event_unpartitioned_node_id")
    op.execute("ALTER INDEX ix_event_alert_id RENAME TO ix_event_unpartitioned_alert_id")
    op.execute(
        "CREATE TABLE event (LIKE event_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (event_id)"
    )
    op.execute("ALTER TABLE event ADD CONSTRAINT event_pkey PRIMARY KEY (event_id)")
    op.create_index("ix_event_node_id", "event", ["node_id"])
    op.create_index("ix_event_alert_id", "event", ["alert_id"])
    op.execute(f'CREATE TABLE "{DEFAULT_PARTITION}" PARTITION OF event DEFAULT')
    now = utcnow()
    oldest = bind.execute(
        text("SELECT min(event_id) FROM event_unpartitioned WHERE event_id ~ :ulid"),
        {"ulid": ULID_PATTERN},
    ).scalar()
    back = 1
    if oldest is not None:
        at = datetime.fromtimestamp(ulid_millis(str(oldest)) / 1000, tz=timezone.utc)
        back = min(max(1, (now.year - at.year) * 12 + now.month - at.month), _MAX_MONTHS_BACK)
    ensure_event_partitions(bind, now=now, months_back=back)
    op.execute("INSERT INTO event SELECT * FROM event_unpartitioned")
    op.execute("DROP TABLE event_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE event_unpartitioned (LIKE event INCLUDING DEFAULTS)")
    op.execute("INSERT INTO event_unpartitioned SELECT * FROM event")
    op.execute("DROP TABLE event CASCADE")
    op.execute("ALTER TABLE event_unpartitioned RENAME TO event")
    op.execute("ALTER TABLE event ADD CONSTRAINT event_pkey PRIMARY KEY (event_id)")
    op.create_index("ix_event_node_id", "event", ["node_id"])
    op.create_index("ix_event_alert_id", "event", ["alert_id"])
