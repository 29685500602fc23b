"""Time partitions of event and telemetry tables on PostgreSQL: made ahead, dropped for retention.

At province scale the event table grows by millions of rows a day, and
deleting old rows row by row is slow and bloats the table; dropping a whole
period is instant. So on PostgreSQL `event` (migration 0016), `plateread`
(0017), the node power history `powersample` (0018) and `watchlisthit`
(0019) are declaratively partitioned, and this module keeps their partitions: `PartitionJob` (a
singleton timer job, `fleet_server.timers`) makes each partitioned table's
periods (months, or days for `powersample`) in advance and, with that
table's own retention, drops periods that ended longer ago than that. Each
table is one `PartitionedTable` in `PARTITIONED_TABLES`; SQLite keeps plain
tables and the job does nothing there.

Why the range is on `event_id` and not on `received_at`: on a partitioned
table every unique key must include the partition column, and `event_id` is
the key that makes a redelivered event a no-op (`INSERT … ON CONFLICT
(event_id) DO NOTHING`). A key of `(event_id, received_at)` would not catch a
redelivery, which arrives at another time. Event ids are ULIDs, whose first
ten characters are their creation time in milliseconds and which sort as
text in time order, so a month is the range of ids from that month's first
millisecond to the next month's: partitioned by time with `event_id` still
unique on its own. A plate read's key is its plate event's id, so the same
ranges apply, and so do a watchlist hit's. The time is the node's clock when it wrote the event;
an id from a wildly wrong clock (or not a ULID at all) lands in the
table's `_default` partition, which is never dropped. A partition made for a
month whose ids already sit in the default partition takes them over (they
move in the same transaction), so making partitions never fails on them.
Names: `event_pYYYYMM`, `plateread_pYYYYMM`, `watchlisthit_pYYYYMM`.

`powersample`'s key is already a time (`bucket_start`, the node's clock, in
its primary key `(node_id, bucket_start)`), so its ranges are plain
timestamps (`key_kind="timestamp"`), one a day (`powersample_pYYYYMMDD`):
with a 30-day retention a day goes at most a day late, and the default
partition takes a bucket from a clock far off, as for event ids.

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
from typing import Literal

from sqlalchemy import Connection, text
from sqlmodel import Session

from fleet_server import audit
from fleet_server.alerting import AlertNotice

__all__ = [
    "DEFAULT_PARTITION",
    "EVENT",
    "PARTITIONED_TABLES",
    "PLATEREAD",
    "POWERSAMPLE",
    "WATCHLISTHIT",
    "PartitionJob",
    "PartitionedTable",
    "drop_expired_partitions",
    "ensure_event_partitions",
    "ensure_partitions",
    "event_partitions",
    "month_bound",
    "monthly_partitions",
    "partition_names",
    "partition_starts",
]

logger = logging.getLogger(__name__)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as ULIDs use it


@dataclass(frozen=True)
class PartitionedTable:
    """A table partitioned by range of time: its key, its period, its names and retention rule.

    `key_kind`: ``"ulid"`` when the key is a ULID (`event_id`, ranges of ids
    made from the period's first millisecond), ``"timestamp"`` when it is a
    (naive UTC) timestamp column such as `powersample.bucket_start`.
    `period`: one partition per ``"month"`` (`_pYYYYMM`) or per ``"day"``
    (`_pYYYYMMDD`). `ahead`: how many periods the job makes in advance.
    `kept_while`: a column of receive times; a period is dropped only when no
    row in it is at or after the retention cut-off (module docstring). It
    must be indexed, since the check runs once per expired period.
    """

    table: str
    key: str = "event_id"
    key_kind: Literal["ulid", "timestamp"] = "ulid"
    period: Literal["month", "day"] = "month"
    ahead: int = 3
    kept_while: str | None = None

    @property
    def default(self) -> str:
        """The partition for keys outside every period (never dropped)."""
        return f"{self.table}_default"

    def month(self, year: int, month: int) -> str:
        """The name of the partition of (`year`, `month`) (a monthly table)."""
        return f"{self.table}_p{year:04d}{month:02d}"

    def partition(self, start: datetime) -> str:
        """The name of the partition of the period that begins at `start`."""
        if self.period == "day":
            return f"{self.table}_p{start:%Y%m%d}"
        return self.month(start.year, start.month)

    def start_of(self, at: datetime) -> datetime:
        """The beginning (UTC) of the period that holds `at`."""
        at = at.astimezone(timezone.utc)
        if self.period == "day":
            return datetime(at.year, at.month, at.day, tzinfo=timezone.utc)
        return _month_start(at.year, at.month)

    def shift(self, start: datetime, periods: int) -> datetime:
        """The beginning of the period `periods` after (before, if negative) the one at `start`."""
        if self.period == "day":
            return start + timedelta(days=periods)
        return _month_start(start.year, start.month + periods)

    def started(self, name: str) -> datetime | None:
        """When the period of partition `name` begins, if it is one of this table's periods."""
        digits = r"(\d{4})(\d{2})(\d{2})" if self.period == "day" else r"(\d{4})(\d{2})"
        found = re.match(rf"^{re.escape(self.table)}_p{digits}$", name)
        if found is None:
            return None
        year, month, *day = (int(g) for g in found.groups())
        try:
            return datetime(year, month, day[0] if day else 1, tzinfo=timezone.utc)
        except ValueError:
            return None

    def match(self, name: str) -> tuple[int, int] | None:
        """(year, month) when `name` is one of this (monthly) table's partitions."""
        start = self.started(name) if self.period == "month" else None
        return (start.year, start.month) if start is not None else None

    def bound(self, at: datetime) -> str | datetime:
        """The key value where the period beginning at `at` starts (a query parameter)."""
        if self.key_kind == "timestamp":
            return at.astimezone(timezone.utc).replace(tzinfo=None)  # the column is naive UTC
        return month_bound(at)

    def bound_literal(self, at: datetime) -> str:
        """`bound` as SQL text for `ATTACH PARTITION … FOR VALUES` (which takes no parameters)."""
        value = self.bound(at)
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value


EVENT = PartitionedTable("event")
PLATEREAD = PartitionedTable("plateread", kept_while="received_at")  # fleet_server.plates
# Node power history (fleet_server.power): ~1.2 M rows a day in Lahore, kept 30 days.
# Daily, so a bucket goes at most a day after its 30 days (monthly would keep up to
# twice the retention), and a history chart (hours to days) reads one to a few days.
POWERSAMPLE = PartitionedTable(
    "powersample", key="bucket_start", key_kind="timestamp", period="day", ahead=7
)
# A hit is its watchlist event's row (same id, same month); it goes with the events' retention.
WATCHLISTHIT = PartitionedTable("watchlisthit")  # fleet_server.ingest.watchlist_hits
PARTITIONED_TABLES = (EVENT, PLATEREAD, POWERSAMPLE, WATCHLISTHIT)
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


def partition_starts(connection: Connection, table: PartitionedTable) -> list[datetime]:
    """When each of `table`'s partitions (its periods, not the default) begins, oldest first."""
    found = (table.started(name) for name in partition_names(connection))
    return sorted(start for start in found if start is not None)


def monthly_partitions(connection: Connection, table: PartitionedTable) -> list[tuple[int, int]]:
    """The months (year, month) that have a partition of (monthly) `table`, oldest first."""
    return [(start.year, start.month) for start in partition_starts(connection, table)]


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
    back: int = 1,
    ahead: int | None = None,
) -> list[str]:
    """Make `table`'s partitions from `back` periods before `now` to `ahead` after.

    Periods are the table's (months or days); `ahead` defaults to the
    table's own. Each new period takes over the rows of its range from the
    default partition (module docstring). Returns the names made; nothing on
    SQLite or an unpartitioned table.
    """
    if connection.dialect.name != "postgresql" or not _is_partitioned(connection, table):
        return []
    have = set(partition_starts(connection, table))
    current = table.start_of(now)
    made = []
    for offset in range(-back, (table.ahead if ahead is None else ahead) + 1):
        start = table.shift(current, offset)
        if start in have:
            continue
        end = table.shift(start, 1)
        name = table.partition(start)
        # Made detached, filled from the default partition, then attached: the
        # default partition may already hold keys of this period (a node's clock ahead).
        # Only our constant table names are formatted into these statements.
        connection.execute(text(f'CREATE TABLE "{name}" (LIKE "{table.table}" INCLUDING DEFAULTS)'))
        connection.execute(
            text(
                f'WITH moved AS (DELETE FROM "{table.default}" '  # noqa: S608 - our names
                f"WHERE {table.key} >= :low AND {table.key} < :high RETURNING *) "
                f'INSERT INTO "{name}" SELECT * FROM moved'
            ),
            {"low": table.bound(start), "high": table.bound(end)},
        )
        connection.execute(
            text(
                f'ALTER TABLE "{table.table}" ATTACH PARTITION "{name}" '
                f"FOR VALUES FROM ('{table.bound_literal(start)}') "
                f"TO ('{table.bound_literal(end)}')"
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
    return ensure_partitions(connection, EVENT, now=now, back=months_back, ahead=months_ahead)


def drop_expired_partitions(
    connection: Connection, *, before: datetime, table: PartitionedTable = EVENT
) -> list[str]:
    """Drop `table`'s partitions whose period ended before `before` (never the default).

    A table with `kept_while` keeps a period while any row in it has that
    column at or after `before` (the row retention deletes the older rows;
    the period goes once none is left that is still within retention).
    """
    if connection.dialect.name != "postgresql":
        return []
    dropped = []
    for start in partition_starts(connection, table):
        if table.shift(start, 1) > before:
            continue
        name = table.partition(start)
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
    """Keeps every partitioned table's periods on PostgreSQL: made ahead, dropped after retention.

    Runs every `every_s` (an hour). `retention_days` maps a table name to its
    retention (`event`: `event_retention_days`, `plateread`:
    `plate_retention_days`, `powersample`: `fleet_server.power.RETENTION`,
    `watchlisthit`: `event_retention_days`, as its events); a
    table missing or None there is never dropped from. `ahead`: periods made
    in advance (None: each table's own). A singleton job: one worker holds
    its lease (`fleet_server.leases`).
    """

    retention_days: Mapping[str, float | None] = field(default_factory=dict)
    tables: Sequence[PartitionedTable] = PARTITIONED_TABLES
    ahead: int | None = None
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
        dropped: dict[str, dict[str, object]] = {}
        for table in self.tables:
            ensure_partitions(connection, table, now=now, ahead=self.ahead)
            days = self.retention_days.get(table.table)
            if days is not None:
                before = now - timedelta(days=days)
                gone = drop_expired_partitions(connection, before=before, table=table)
                if gone:
                    dropped[table.table] = {
                        "received_before": audit.format_time(before), "days": days,
                        "partitions": gone,
                    }  # fmt: skip
        if dropped:  # expiry is audited (issue 15): one record per run, in its transaction
            audit.record(
                session, actor="system", action="retention.partitions_dropped",
                object=f"data-class:{','.join(sorted(dropped))}"[:200], detail=dropped, now=now,
            )  # fmt: skip
        return []
