"""Monthly partitions of the `event` table on PostgreSQL, made ahead and dropped for retention.

At province scale the event table grows by millions of rows a day, and
deleting old rows row by row is slow and bloats the table; dropping a whole
month is instant. So on PostgreSQL `event` is declaratively partitioned
(migration 0016), and this module keeps its partitions: `EventPartitionJob`
(a singleton timer job, `fleet_server.timers`) makes each month's partition
`months_ahead` months in advance and, with `retention_days`, drops months
that ended longer ago than that. SQLite keeps one plain table; the job does
nothing there.

Why the range is on `event_id` and not on `received_at`: on a partitioned
table every unique key must include the partition column, and `event_id` is
the key that makes a redelivered event a no-op (`INSERT … ON CONFLICT
(event_id) DO NOTHING`). A key of `(event_id, received_at)` would not catch a
redelivery, which arrives at another time. Event ids are ULIDs, whose first
ten characters are their creation time in milliseconds and which sort as
text in time order, so a month is the range of ids from that month's first
millisecond to the next month's: partitioned by time with `event_id` still
unique on its own. The time is the node's clock when it wrote the event;
an id from a wildly wrong clock (or not a ULID at all) lands in the
`event_default` partition, which is never dropped. A partition made for a
month whose ids already sit in the default partition takes them over (they
move in the same transaction), so making partitions never fails on them.
Names: `event_pYYYYMM`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, text
from sqlmodel import Session

from fleet_server.alerting import AlertNotice

__all__ = [
    "DEFAULT_PARTITION",
    "EventPartitionJob",
    "drop_expired_partitions",
    "ensure_event_partitions",
    "event_partitions",
    "month_bound",
    "partition_names",
]

logger = logging.getLogger(__name__)

DEFAULT_PARTITION = "event_default"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as ULIDs use it
_NAME = re.compile(r"^event_p(\d{4})(\d{2})$")


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


def event_partitions(connection: Connection) -> list[tuple[int, int]]:
    """The months (year, month) that have an `event_pYYYYMM` partition, oldest first."""
    found = []
    for name in partition_names(connection):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
    return sorted(found)


def _is_partitioned(connection: Connection) -> bool:
    row = connection.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'event' AND n.nspname = current_schema()"
        )
    ).first()
    return row is not None


def ensure_event_partitions(
    connection: Connection, *, now: datetime, months_back: int = 1, months_ahead: int = 3
) -> list[str]:
    """Make the monthly partitions from `months_back` before `now` to `months_ahead` after.

    Each new month takes over the rows of its range from the default
    partition (module docstring). Returns the names made; nothing on SQLite
    or an unpartitioned table.
    """
    if connection.dialect.name != "postgresql" or not _is_partitioned(connection):
        return []
    have = set(event_partitions(connection))
    made = []
    for offset in range(-months_back, months_ahead + 1):
        start = _month_start(now.year, now.month + offset)
        if (start.year, start.month) in have:
            continue
        end = _month_start(start.year, start.month + 1)
        name = f"event_p{start.year:04d}{start.month:02d}"
        low, high = month_bound(start), month_bound(end)
        # Made detached, filled from the default partition, then attached: the
        # default partition may already hold ids of this month (a node's clock ahead).
        connection.execute(text(f'CREATE TABLE "{name}" (LIKE event INCLUDING DEFAULTS)'))
        connection.execute(
            text(
                f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" '  # noqa: S608 - our names
                "WHERE event_id >= :low AND event_id < :high RETURNING *) "
                f'INSERT INTO "{name}" SELECT * FROM moved'
            ),
            {"low": low, "high": high},
        )
        connection.execute(
            text(
                f'ALTER TABLE event ATTACH PARTITION "{name}" '
                f"FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        )
        made.append(name)
    if made:
        logger.info("event partitions made: %s", ", ".join(made))
    return made


def drop_expired_partitions(connection: Connection, *, before: datetime) -> list[str]:
    """Drop the monthly partitions whose month ended before `before` (never the default)."""
    if connection.dialect.name != "postgresql":
        return []
    dropped = []
    for year, month in event_partitions(connection):
        if _month_start(year, month + 1) <= before:
            name = f"event_p{year:04d}{month:02d}"
            connection.execute(text(f'ALTER TABLE event DETACH PARTITION "{name}"'))
            connection.execute(text(f'DROP TABLE "{name}"'))
            dropped.append(name)
    if dropped:
        logger.info("event retention: partitions dropped: %s", ", ".join(dropped))
    return dropped


@dataclass
class EventPartitionJob:
    """Keeps `event`'s monthly partitions on PostgreSQL: made ahead, dropped after retention.

    Runs every `every_s` (an hour); with `retention_days` None nothing is
    dropped. A singleton job: one worker holds its lease (`fleet_server.leases`).
    """

    retention_days: float | None = None
    months_ahead: int = 3
    every_s: float = 3600.0
    name: str = "event_partitions"
    _next_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._next_at is not None and now < self._next_at:
            return []
        self._next_at = now + timedelta(seconds=self.every_s)
        if session.get_bind().dialect.name != "postgresql":
            return []  # (asked of the engine: a SQLite connection would take the write lock)
        connection = session.connection()
        ensure_event_partitions(connection, now=now, months_ahead=self.months_ahead)
        if self.retention_days is not None:
            drop_expired_partitions(connection, before=now - timedelta(days=self.retention_days))
        return []
