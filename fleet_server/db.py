"""Database engine and schema creation for SQLite (default) and PostgreSQL.

SQLite is the embedded, one-box default; it runs in WAL mode with a busy
timeout so the ingest worker, the escalation loop and API requests can share
one file without "database is locked" errors, and with `synchronous=FULL`:
ingest acks an event only after its commit and the node then deletes its own
copy, so a commit must survive a power cut or OS crash too, not only a
`kill -9` (NORMAL in WAL mode may lose the last commits on power loss). It
costs one WAL fsync per commit, ~0.8 ms here, once per ingest batch.
PostgreSQL is the at-scale choice and works with the same models.

The schema itself is made and upgraded by Alembic migrations
(`fleet_server.schema`, docs/fleet-server.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine

from fleet_server import models  # noqa: F401 - registers every table on the metadata

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for `url`, tuned for the backend it names."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN handling defers locking; take the write lock at
        # BEGIN so two writers queue on busy_timeout instead of failing on upgrade.
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the installed driver; a bare postgresql:// would pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=FULL")  # acked = on stable storage (module doc)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
