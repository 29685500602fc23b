"""Who runs which timer job when N server workers share one PostgreSQL database.

With one process (the one-box default, SQLite) every timer job simply runs
every tick. With N stateless workers on one PostgreSQL database, each due
item must still be handled once:

- a job that works on due rows and claims them itself with
  `SELECT … FOR UPDATE SKIP LOCKED` (escalation: `escalate_due`) runs on
  every worker; two workers never see the same locked row, and a row
  committed by one is no longer due for the other;
- every other job is a singleton. Its `Lease` is a session advisory lock
  (`pg_try_advisory_lock`) held on one dedicated connection per worker:
  the first worker to ask holds it for as long as that connection lives,
  so in-process state such as the silence job's "listening since" stays on
  one worker; when the leader dies or its connection is cut, PostgreSQL
  drops the lock and a standby takes it on its next tick.
- A lease holder's connection can die between its liveness check and its
  job's commit, while a standby already took over. So each singleton run
  also takes a transaction-level advisory lock on a second key inside the
  job's own transaction (`fence`): two runs of one job never overlap, even
  during a handover.

Advisory locks and keys are per database, and tests (and staging) put many
schemas in one database, so every key is made from the schema name and the
job name. `database_reachable` is the readiness probe workers (and the
RabbitMQ consumer, which stops taking messages while it is false) share.
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

__all__ = [
    "FENCE_NAMESPACE",
    "LEASE_NAMESPACE",
    "Leases",
    "advisory_key",
    "database_reachable",
    "leases_for",
]

logger = logging.getLogger(__name__)

# The first half of each two-int advisory key: "NB" for leases, "NC" for fences.
LEASE_NAMESPACE = 0x4E42
FENCE_NAMESPACE = 0x4E43


def advisory_key(schema: str, name: str) -> int:
    """A signed 32-bit key for `name` in `schema` (the second half of an advisory key)."""
    value = zlib.crc32(f"{schema}/{name}".encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def database_reachable(engine: Engine, *, timeout_s: float = 2.0) -> bool:
    """Whether one `SELECT 1` on `engine` answers within `timeout_s` (readiness, /healthz).

    On PostgreSQL the statement carries a `statement_timeout` so a database
    that accepts connections but hangs counts as unreachable too. Never
    raises: the answer is the point.
    """
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            conn.execute(text("SELECT 1"))
            conn.rollback()
        return True
    except Exception as exc:  # any failure means "not reachable now"
        logger.warning("database not reachable: %s", exc)
        return False


@dataclass
class Leases:
    """A worker's singleton leases, held on one dedicated PostgreSQL connection.

    `check` (once per timer tick) verifies that connection and forgets every
    lease if it died; `hold(name)` says whether this worker holds the lease
    now, taking it if it is free; `fence(session, name)` takes the job's
    transaction-level lock. `close` releases everything for good (a clean
    shutdown hands leases over at once rather than when the connection times
    out).
    """

    engine: Engine
    held: set[str] = field(default_factory=set)
    _conn: Any = field(default=None, init=False, repr=False)
    _schema: str = field(default="", init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Set by `close`: a tick still running while the server stops takes no lease again.
    _closed: bool = field(default=False, init=False, repr=False)

    def _connect(self) -> Any:
        # A pooled connection detached from the pool: same URL and connect
        # arguments as the engine, but ours for as long as the leases live.
        raw = self.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()
        if conn is None:
            raise RuntimeError("the engine gave no driver connection for the leases")
        conn.autocommit = True
        self._schema = str(conn.execute("SELECT current_schema()").fetchone()[0])
        return conn

    def _drop(self, reason: object) -> None:
        if self.held:
            logger.warning("lost timer leases %s: %s", sorted(self.held), reason)
        self.held.clear()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already gone
                logger.debug("closing a dead lease connection", exc_info=True)
        self._conn = None

    def check(self) -> None:
        """Verify the lease connection (once per tick); a dead one loses every lease."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("SELECT 1")
            except Exception as exc:
                self._drop(exc)

    def hold(self, name: str) -> bool:
        """Whether this worker holds `name`'s lease now (taking it when it is free)."""
        with self._lock:
            if name in self.held:
                return True
            if self._closed:
                return False
            try:
                if self._conn is None:
                    self._conn = self._connect()
                key = advisory_key(self._schema, name)
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (LEASE_NAMESPACE, key)
                ).fetchone()
            except Exception as exc:
                logger.warning("cannot ask for timer lease %s: %s", name, exc)
                self._drop(exc)
                return False
            if row is not None and row[0]:
                self.held.add(name)
                logger.info(
                    "this worker now runs timer job %s (lease on backend %s)",
                    name,
                    self._conn.info.backend_pid,
                )
                return True
            return False

    def fence(self, session: Session, name: str) -> bool:
        """Take `name`'s transaction lock in the job's own transaction (False: another runs it)."""
        schema = session.execute(text("SELECT current_schema()")).scalar_one()
        got = session.execute(
            text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
            {"ns": FENCE_NAMESPACE, "key": advisory_key(str(schema), name)},
        ).scalar_one()
        return bool(got)

    def close(self) -> None:
        """Release every lease (closing the connection releases its advisory locks)."""
        with self._lock:
            self._closed = True
            self.held.clear()
            if self._conn is not None:
                # Released before the close returns: closing the connection alone
                # releases them only when its backend has exited, a moment later,
                # and a standby asking in that moment would wait a whole tick.
                try:
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
                except Exception:  # a dead connection holds nothing any more
                    logger.debug("releasing leases on a dead connection", exc_info=True)
            self._drop("closed")


def leases_for(engine: Engine) -> Leases | None:
    """Leases on PostgreSQL; None elsewhere (one process runs every job, as before)."""
    return Leases(engine) if engine.dialect.name == "postgresql" else None
