"""Daily partitions of `powersample` (node power history) on PostgreSQL, by `bucket_start`

On PostgreSQL `powersample` becomes a table partitioned by range of
`bucket_start` (the node's clock), one partition a day, `powersample_pYYYYMMDD`,
so its 30-day retention is dropping a day instead of deleting rows node by
node. The primary key `(node_id, bucket_start)` already holds the partition
key. Partitions from the oldest stored bucket's day (at most 60 days back) to
a week ahead, and `powersample_default` for buckets outside every day (a
clock far off); rows are copied over. `fleet_server.partitions` keeps them
(`POWERSAMPLE`). SQLite is unchanged. docs/scaling-postgresql.md. Issue 17.

Revision ID: 0018
Revises: 0017
Created: 2026-11-30 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from alembic import op
from sqlalchemy import text

from fleet_server.models.common import utcnow
from fleet_server.partitions import POWERSAMPLE, ensure_partitions

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Twice the retention: older buckets (the job drops their days at once) or a
# clock far behind stay in the default partition rather than making years of days.
_MAX_DAYS_BACK = 60


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE powersample RENAME TO powersample_unpartitioned")
    op.execute(
        "ALTER TABLE powersample_unpartitioned "
        "RENAME CONSTRAINT powersample_pkey TO powersample_unpartitioned_pkey"
    )
    op.execute(
        "CREATE TABLE powersample (LIKE powersample_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (bucket_start)"
    )
    op.execute(
        "ALTER TABLE powersample ADD CONSTRAINT powersample_pkey "
        "PRIMARY KEY (node_id, bucket_start)"
    )
    op.execute(f'CREATE TABLE "{POWERSAMPLE.default}" PARTITION OF powersample DEFAULT')
    now = utcnow()
    oldest = bind.execute(text("SELECT min(bucket_start) FROM powersample_unpartitioned")).scalar()
    back = 1
    if isinstance(oldest, datetime):
        days = (now - oldest.replace(tzinfo=timezone.utc)).days + 1
        back = min(max(1, days), _MAX_DAYS_BACK)
    ensure_partitions(bind, POWERSAMPLE, now=now, back=back)
    op.execute("INSERT INTO powersample SELECT * FROM powersample_unpartitioned")
    op.execute("DROP TABLE powersample_unpartitioned")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE powersample_unpartitioned (LIKE powersample INCLUDING DEFAULTS)")
    op.execute("INSERT INTO powersample_unpartitioned SELECT * FROM powersample")
    op.execute("DROP TABLE powersample CASCADE")
    op.execute("ALTER TABLE powersample_unpartitioned RENAME TO powersample")
    op.execute(
        "ALTER TABLE powersample ADD CONSTRAINT powersample_pkey "
        "PRIMARY KEY (node_id, bucket_start)"
    )
