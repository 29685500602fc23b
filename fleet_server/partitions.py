"""Monthly partitions of the per-event tables on PostgreSQL, made ahead and dropped for retention.

At province scale the event table grows by millions of rows a day, and
deleting old rows row by row is slow and bloats the table; dropping a whole
month is instant. So on PostgreSQL `event` (migration 0016) and `plateread`
(migration 0017) are declaratively partitioned, and this module keeps their
partitions: `PartitionJob` (a singleton timer job, `fleet_server.timers`)
makes each partitioned table's month `months_ahead` months in advance and,
with that table's own retention, drops months that ended longer ago than
that. Each table is one `PartitionedTable` in `PARTITIONED_TABLES`; SQLite
keeps plain tables and the job does nothing there.

Why the range is on `event_id` and not on `received_at`: on a partitioned
table every unique key must include the partition column, and `event_id` is
the key that makes a redelivered event a no-op (`INSERT … ON CONFLICT
(event_id) DO NOTHING`). A key of `(event_id, received_at)` would not catch a
redelivery, which arrives at another time. Event ids are ULIDs, whose first
ten characters are their creation time in milliseconds and which sort as
text in time order, so a month is the range of ids from that month's first
millisecond to the next month's: partitioned by time with `event_id` still
unique on its own. A plate read's key is its plate event's id, so the same
ranges apply. The time is the node's clock when it wrote the event;
an id from a wildly wrong clock (or not a ULID at all) lands in the
table's `_default` partition, which is never dropped. A partition made for a
month whose ids already sit in the default partition takes them over (they
move in the same transaction), so making partitions never fails on them.
Names: `event_pYYYYMM`, `plateread_pYYYYMM`.

A table whose retention is by receive time (`plateread`: the rows go
`plate_retention_days` after they were received, `fleet_server.plates`)
names that column (`kept_while`): its month is dropped only once no row in
it was received after the cut-off, so a node's outbox backlog (written in
an old month, received lately) is never dropped before its time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, text
from sqlmodel import Session

from fleet_server.alerting import AlertNotice

__all__ = [
    "DEFAULT_PARTITION",
    "EVENT",
    "PARTITIONED_TABLES",
    "PLATEREAD",
    "PartitionJob",
    "PartitionedTable",
    "drop_expired_partitions",
    "ensure_event_partitions",
    "ensure_partitions",
    "event_partitions",
    "month_bound",
    "monthly_partitions",
    "partition_names",
]

logger = logging.getLogger(__name__)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as ULIDs use it


@dataclass(frozen=True)
class PartitionedTable:
    """A table partitioned by month on its ULID key (`event_id`): its names and retention rule.

    `kept_while`: a column of receive times; a month is dropped only when no
    row in it is at or after the retention cut-off (module docstring). It
    must be indexed, since the check runs once per expired month.
    """

    table: str
    key: str = "event_id"
    kept_while: str | None = None

    @property
    def default(self) -> str:
        """The partition for ids outside every month (never dropped)."""
        return f"{self.table}_default"

    def month(self, year: int, month: int) -> str:
        """The name of the partition of (`year`, `month`)."""
        return f"{self.table}_p{year:04d}{month:02d}"

    def match(self, name: str) -> tuple[int, int] | None:
        """(year, month) when `name` is one of this table's monthly partitions."""
        found = re.match(rf"^{re.escape(self.table)}_p(\d{{4}})(\d{{2}})$", name)
        return (int(found.group(1)), int(found.group(2))) if found else None


EVENT = PartitionedTable("event")
PLATEREAD = PartitionedTable("plateread", kept_while="received_at")  # fleet_server.plates
PARTITIONED_TABLES = (EVENT, PLATEREAD)
DEFAULT_PARTITION = EVENT.default  # (migration 0016 names it so)


def _month_start(year: int, month: int) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=timezone.utc)


def month_bound(at: datetime) -> str:
    """The smallest ULID of the millisecond `at`: a partition bound (26 characters)."""
    millis = int(at.timestamp() * 1000)
    chars = []
    for _ in range(10):
        chars.append(_ALPHABET[millis & 31])
        millis >>= 5
    return "".join(reversed(chars)) + "0" * 16


def partition_names(connection: Connection) -> set[str]:
    """Every table in this schema that is a partition (so schema checks leave it out)."""
    if connection.dialect.name != "postgresql":
        return set()
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relispartition AND n.nspname = current_schema()"
        )
    )
    return {str(r[0]) for r in rows}


def monthly_partitions(connection: Connection, table: PartitionedTable) -> list[tuple[int, int]]:
    """The months (year, month) that have a partition of `table`, oldest first."""
    found = (table.match(name) for name in partition_names(connection))
    return sorted(month for month in found if month is not None)


def event_partitions(connection: Connection) -> list[tuple[int, int]]:
    """The months (year, month) that have an `event_pYYYYMM` partition, oldest first."""
    return monthly_partitions(connection, EVENT)


def _is_partitioned(connection: Connection, table: PartitionedTable) -> bool:
    row = connection.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND n.nspname = current_schema()"
        ),
        {"table": table.table},
    ).first()
    return row is not None


def ensure_partitions(
    connection: Connection,
    table: PartitionedTable,
    *,
    now: datetime,
    months_back: int = 1,
    months_ahead: int = 3,
) -> list[str]:
    """Make `table`'s monthly partitions from `months_back` before `now` to `months_ahead` after.

    Each new month takes over the rows of its range from the default
    partition (module docstring). Returns the names made; nothing on SQLite
    or an unpartitioned table.
    """
    if connection.dialect.name != "postgresql" or not _is_partitioned(connection, table):
        return []
    have = set(monthly_partitions(connection, table))
    made = []
    for offset in range(-months_back, months_ahead + 1):
        start = _month_start(now.year, now.month + offset)
        if (start.year, start.month) in have:
            continue
        end = _month_start(start.year, start.month + 1)
        name = table.month(start.year, start.month)
        low, high = month_bound(start), month_bound(end)
        # Made detached, filled from the default partition, then attached: the
        # default partition may already hold ids of this month (a node's clock ahead).
        # Only our constant table names are formatted into these statements.
        connection.execute(text(f'CREATE TABLE "{name}" (LIKE "{table.table}" INCLUDING DEFAULTS)'))
        connection.execute(
            text(
                f'WITH moved AS (DELETE FROM "{table.default}" '  # noqa: S608 - our names
                f"WHERE {table.key} >= :low AND {table.key} < :high RETURNING *) "
                f'INSERT INTO "{name}" SELECT * FROM moved'
            ),
            {"low": low, "high": high},
        )
        connection.execute(
            text(
                f'ALTER TABLE "{table.table}" ATTACH PARTITION "{name}" '
                f"FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        )
        made.append(name)
    if made:
        logger.info("%s partitions made: %s", table.table, ", ".join(made))
    return made


def ensure_event_partitions(
    connection: Connection, *, now: datetime, months_back: int = 1, months_ahead: int = 3
) -> list[str]:
    """`ensure_partitions` for `event` (as migration 0016 calls it)."""
    return ensure_partitions(
        connection, EVENT, now=now, months_back=months_back, months_ahead=months_ahead
    )


def drop_expired_partitions(
    connection: Connection, *, before: datetime, table: PartitionedTable = EVENT
) -> list[str]:
    """Drop `table`'s monthly partitions whose month ended before `before` (never the default).

    A table with `kept_while` keeps a month while any row in it has that
    column at or after `before` (the row retention deletes the older rows;
    the month goes once none is left that is still within retention).
    """
    if connection.dialect.name != "postgresql":
        return []
    dropped = []
    for year, month in monthly_partitions(connection, table):
        if _month_start(year, month + 1) > before:
            continue
        name = table.month(year, month)
        if table.kept_while is not None:
            recent = connection.execute(
                text(f'SELECT 1 FROM "{name}" WHERE {table.kept_while} >= :before LIMIT 1'),  # noqa: S608
                {"before": before.astimezone(timezone.utc).replace(tzinfo=None)},
            ).first()
            if recent is not None:
                logger.info("%s kept: it holds rows received within retention", name)
                continue
        connection.execute(text(f'ALTER TABLE "{table.table}" DETACH PARTITION "{name}"'))
        connection.execute(text(f'DROP TABLE "{name}"'))
        dropped.append(name)
    if dropped:
        logger.info("%s retention: partitions dropped: %s", table.table, ", ".join(dropped))
    return dropped


@dataclass
class PartitionJob:
    """Keeps every partitioned table's months on PostgreSQL: made ahead, dropped after retention.

    Runs every `every_s` (an hour). `retention_days` maps a table name to its
    retention (`event`: `event_retention_days`, `plateread`:
    `plate_retention_days`); a table missing or None there is never dropped
    from. A singleton job: one worker holds its lease (`fleet_server.leases`).
    """

    retention_days: Mapping[str, float | None] = field(default_factory=dict)
    tables: Sequence[PartitionedTable] = PARTITIONED_TABLES
    months_ahead: int = 3
    every_s: float = 3600.0
    name: str = "event_partitions"  # (the lease's name since migration 0016)
    _next_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._next_at is not None and now < self._next_at:
            return []
        self._next_at = now + timedelta(seconds=self.every_s)
        if session.get_bind().dialect.name != "postgresql":
            return []  # (asked of the engine: a SQLite connection would take the write lock)
        connection = session.connection()
        for table in self.tables:
            ensure_partitions(connection, table, now=now, months_ahead=self.months_ahead)
            days = self.retention_days.get(table.table)
            if days is not None:
                drop_expired_partitions(connection, before=now - timedelta(days=days), table=table)
        return []
