"""The bulk SQL writer: a batch's events and its nodes' `last_seen_at`/`last_seq`.

Events and node touches are the two writes every batch makes whatever it
holds; `write_events_and_nodes` sends them as multi-row statements straight
to the driver on SQLite and PostgreSQL (one spec per database, not two
copies), and as SQLAlchemy Core executemany elsewhere. `MULTI_ROW_WRITES`
off makes every database take the Core statements (tests compare the two).

On PostgreSQL the events go by `COPY` instead (`COPY_WRITES`): into a
per-connection temporary table, then `INSERT … SELECT … ON CONFLICT
(event_id) DO NOTHING`, so an event another worker stored meanwhile (a
redelivery racing a partition handover) is dropped instead of failing the
whole batch, and the writer says how many rows the database took. Other
per-event rows take the same path (`copy_insert`: plate reads,
`fleet_server.plates`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, Table, bindparam, insert, update
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlmodel import Session

from fleet_server.models import Event, Node

__all__ = [
    "COPY_WRITES",
    "EVENT_COLUMNS",
    "MULTI_ROW_WRITES",
    "copy_insert",
    "naive_utc",
    "sqlite_datetime",
    "write_events_and_nodes",
]

_EVENT_TABLE: Table = Event.__table__  # type: ignore[attr-defined]
_NODE_TABLE: Table = Node.__table__  # type: ignore[attr-defined]
EVENT_COLUMNS = (
    "event_id", "node_id", "type", "seq", "ts", "received_at", "payload", "alert_id",
    "ts_implausible",
)  # fmt: skip
_INSERT_EVENTS = insert(_EVENT_TABLE)
# `last_seen_at` and `last_seq` of every node in a batch, in one executemany.
_TOUCH_NODES = (
    update(_NODE_TABLE)
    .where(_NODE_TABLE.c.node_id == bindparam("b_node_id"))
    .values(last_seen_at=bindparam("b_seen"), last_seq=bindparam("b_seq"))
)
# The same two statements compiled for SQLite (qmark), with their parameter order.
_SQLITE_INSERT = _INSERT_EVENTS.compile(dialect=sqlite_dialect(), column_keys=list(EVENT_COLUMNS))
_SQLITE_TOUCH = _TOUCH_NODES.compile(dialect=sqlite_dialect())
if tuple(_SQLITE_INSERT.positiontup or ()) != EVENT_COLUMNS or tuple(
    _SQLITE_TOUCH.positiontup or ()
) != ("b_seq", "b_seen", "b_node_id"):
    raise RuntimeError("ingest's SQLite statements changed parameter order; update the tuples")


# SQLite before 3.32 allows 999 parameters per statement; UPDATE … FROM needs 3.33.
_SQLITE_MAX_PARAMS = 999
_SQLITE_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)
# Multi-row forms (see `write_events_and_nodes`); only placeholders are formatted in.
_SQLITE_INSERT_HEAD, _SQLITE_INSERT_ROW = str(_SQLITE_INSERT).split(" VALUES ")
_SQLITE_TOUCH_HEAD = "UPDATE node SET last_seq = v.column1, last_seen_at = ? FROM (VALUES "
_SQLITE_TOUCH_TAIL = ") AS v WHERE node.node_id = v.column2"
if _NODE_TABLE.name != "node":
    raise RuntimeError("ingest's SQLite node UPDATE names the wrong table")
MULTI_ROW_WRITES = True  # tests turn it off to compare with the Core statements
COPY_WRITES = True  # PostgreSQL events by COPY (with MULTI_ROW_WRITES); tests compare
# The COPY path's statements (`copy_insert`). Each table's staging table lives
# as long as the connection and is emptied by every commit; `IF NOT EXISTS`
# makes it at a connection's first batch (and again after a rollback undid that).


def _copy_statements(table: str, columns: tuple[str, ...], key: str) -> tuple[str, str, str]:
    """(make the staging table, COPY into it, move its new rows into `table`).

    Only constant table and column names are formatted into these statements.
    """
    stage, names = f"nb_{table}_in", ", ".join(columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
        f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        f"COPY {stage} ({names}) FROM STDIN",
        f"INSERT INTO {table} ({names}) "  # noqa: S608
        f"SELECT {names} FROM {stage} ON CONFLICT ({key}) DO NOTHING RETURNING {key}",
    )


_COPY_STATEMENTS: dict[tuple[str, tuple[str, ...], str], tuple[str, str, str]] = {}


@dataclass(frozen=True)
class _MultiRowSql:
    """What differs between SQLite and PostgreSQL in the two multi-row statements."""

    max_params: int  # per statement
    insert_row: str  # "(?, ?, …)" for one event
    touch_head: str  # "UPDATE node … FROM (VALUES "
    touch_pair: str  # one (last_seq, node_id) pair
    touch_tail: str
    stored_time: Callable[[datetime], object]  # a datetime as `UtcDateTime` binds it
    touch_one_by_one: str | None = None  # no UPDATE … FROM here: this, as an executemany
    copy: bool = False  # events by COPY and INSERT … ON CONFLICT (PostgreSQL)


def write_events_and_nodes(
    session: Session,
    event_rows: list[dict[str, object]],
    seqs: dict[str, int | None],
    now: datetime,
) -> set[str]:
    """Insert the batch's events and set each node's `last_seen_at`/`last_seq`.

    Returns the ids of the events in `event_rows` that another writer stored
    first (between the batch's read and this write), which the COPY path
    drops; the other paths fail the batch on those instead, so it is empty.

    On SQLite and PostgreSQL the rows go to the driver directly, as multi-row
    statements (`INSERT … VALUES (…), (…)` and `UPDATE … FROM (VALUES …)`, as
    many parameters each as the database takes), with the datetimes already
    in the form `UtcDateTime` stores. In `bench ingest` on SQLite,
    SQLAlchemy's per-row parameter processing was a sixth of the worker, and
    an executemany is one `sqlite3_step` per row, each releasing the GIL and
    waiting to get it back from the MQTT thread; on PostgreSQL the Core path
    ran one UPDATE per node. Other databases take the Core executemany
    statements.
    """
    spec = _MULTI_ROW.get(session.get_bind().dialect.name) if MULTI_ROW_WRITES else None
    if spec is None:
        if event_rows:
            session.execute(_INSERT_EVENTS, event_rows)
        session.execute(
            _TOUCH_NODES, [{"b_node_id": n, "b_seen": now, "b_seq": s} for n, s in seqs.items()]
        )
        return set()
    connection = session.connection()
    seen = spec.stored_time(now)
    rows = [
        tuple(
            seen
            if name == "received_at"
            else spec.stored_time(row[name])  # type: ignore[arg-type]
            if name == "ts"
            else row[name]
            for name in EVENT_COLUMNS
        )
        for row in event_rows
    ]
    raced: set[str] = set()
    if spec.copy and COPY_WRITES:
        if rows:
            stored = _copy_events(connection, rows)
            if len(stored) < len(rows):
                raced = {str(row["event_id"]) for row in event_rows} - stored
    else:
        step = spec.max_params // len(EVENT_COLUMNS)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            sql = _SQLITE_INSERT_HEAD + " VALUES " + ", ".join([spec.insert_row] * len(chunk))
            connection.exec_driver_sql(sql, tuple(v for row in chunk for v in row))
    if spec.touch_one_by_one is not None:
        connection.exec_driver_sql(spec.touch_one_by_one, [(s, seen, n) for n, s in seqs.items()])
        return raced
    touched = list(seqs.items())
    step = (spec.max_params - 1) // 2
    for start in range(0, len(touched), step):
        pairs = touched[start : start + step]
        sql = spec.touch_head + ", ".join([spec.touch_pair] * len(pairs)) + spec.touch_tail
        connection.exec_driver_sql(sql, (seen, *(v for n, s in pairs for v in (s, n))))
    return raced


def copy_insert(
    connection: Connection,
    *,
    table: str,
    columns: tuple[str, ...],
    rows: list[tuple[object, ...]],
    key: str = "event_id",
) -> set[str]:
    """PostgreSQL: COPY `rows` into `table`'s staging table, move the new ones in; their keys.

    A row whose `key` is already stored (another worker wrote it first) is
    left out, not an error. `table` and `columns` are the caller's constants,
    never input; datetimes in `rows` must already be naive UTC (`naive_utc`,
    as `UtcDateTime` stores them): COPY bypasses the column types.
    """
    statements = _COPY_STATEMENTS.get((table, columns, key))
    if statements is None:
        statements = _COPY_STATEMENTS[(table, columns, key)] = _copy_statements(table, columns, key)
    make_stage, copy_in, move = statements
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("no driver connection for COPY")
    with driver.cursor() as cursor:
        cursor.execute(make_stage)
        with cursor.copy(copy_in) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(move)
        return {str(row[0]) for row in cursor.fetchall()}


def _copy_events(connection: Connection, rows: list[tuple[object, ...]]) -> set[str]:
    """COPY `rows` into the staging table, move the new ones into `event`; their ids."""
    return copy_insert(connection, table=_EVENT_TABLE.name, columns=EVENT_COLUMNS, rows=rows)


def naive_utc(value: datetime) -> datetime:
    """An aware datetime as `UtcDateTime` binds it on PostgreSQL: naive, in UTC."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def sqlite_datetime(value: datetime) -> str:
    """An aware datetime as `UtcDateTime` stores it on SQLite (naive UTC, microseconds)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    v = value.astimezone(timezone.utc)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


_MULTI_ROW = {
    "sqlite": _MultiRowSql(
        max_params=_SQLITE_MAX_PARAMS,
        insert_row=_SQLITE_INSERT_ROW,
        touch_head=_SQLITE_TOUCH_HEAD,
        touch_pair="(?, ?)",
        touch_tail=_SQLITE_TOUCH_TAIL,
        stored_time=sqlite_datetime,
        touch_one_by_one=None if _SQLITE_UPDATE_FROM else str(_SQLITE_TOUCH),
    ),
    # PostgreSQL's protocol allows 65,535 parameters per statement.
    "postgresql": _MultiRowSql(
        max_params=65_535,
        insert_row="(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")",
        touch_head="UPDATE node SET last_seq = v.seq, last_seen_at = %s FROM (VALUES ",
        touch_pair="(%s::integer, %s)",
        touch_tail=") AS v(seq, node_id) WHERE node.node_id = v.node_id",
        stored_time=naive_utc,
        copy=True,
    ),
}
