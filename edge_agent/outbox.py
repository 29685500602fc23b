"""The durable outbox: every event is on disk before it is published.

One SQLite database per node (``<data_dir>/outbox.sqlite3``) in WAL mode. An
event is written (with its ULID ``event_id`` and the node's next ``seq``),
then published QoS 1; it is deleted only when the server's application `Ack`
lists its id — a broker PUBACK proves nothing about the database. Unacked
events are re-published in ``seq`` order after every (re)connect and after
``resend_after_s`` without an ack (the agent drives that; the outbox keeps
the order and the last publish time).

Durability (fsync) policy:

- ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=FULL``: SQLite fsyncs
  the WAL at every commit, so when `append` returns the event survives a
  power cut, and only then does the agent publish it.
- One transaction per event: the ``seq`` counter and the event row are
  committed together, so a crash can neither lose an event whose seq was
  used nor reuse a seq. ``bd_seq`` is committed (fsynced) on every connect
  attempt before the CONNECT goes out.
- Ack deletes are committed with the same FULL policy; losing one would only
  cause a duplicate the server drops, but one policy is easier to reason
  about.
- The last publish time is kept in memory only: after a restart every
  unacked event is re-published on connect anyway, and writing it would
  double the fsyncs per event.
- Checkpoints are SQLite's automatic ones (every 1000 WAL pages) plus a
  ``wal_checkpoint(TRUNCATE)`` on `close`.
- ``PRAGMA locking_mode=EXCLUSIVE``, set before the first WAL access: one
  agent process owns its outbox, so SQLite keeps the WAL index in heap
  memory instead of a memory-mapped ``-shm`` file ("WAL without shared
  memory" in SQLite's WAL docs). WAL and the FULL fsync policy are
  unchanged; one file descriptor per node is saved (database and ``-wal``
  only), which is what lets one simulator process hold 5,000+ nodes. The
  lock is held from open to `close`: another process (a second agent on the
  same data dir, a ``sqlite3`` shell) gets "database is locked" instead of
  reading or writing the outbox alongside the agent.
- ``synchronous="normal"`` exists for simulated fleets (thousands of
  databases in one process, no power cuts to survive); nodes use ``full``.

Bounds: at most ``max_events`` rows. When full, the oldest non-panic events
are evicted (and counted in ``evicted``); panic events are never evicted, so
a press with a full outbox of panic presses is still written (the bound is
exceeded rather than a press lost).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import OutboxError
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import EventBase

__all__ = ["PANIC_TYPE", "Outbox", "StoredEvent"]

logger = logging.getLogger(__name__)

PANIC_TYPE = "panic"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_evictable ON events (event_type, seq);
"""


@dataclass(frozen=True)
class StoredEvent:
    """One event as written: what to publish, and where."""

    seq: int
    event_id: str
    event_type: str
    topic: str
    payload: bytes
    created_at: float

    @property
    def is_panic(self) -> bool:
        return self.event_type == PANIC_TYPE


class Outbox:
    """A node's durable, bounded, ordered queue of unacknowledged events."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_events: int = 10_000,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout_s: float = 5.0,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = Path(path)
        self.max_events = max_events
        self._last_published: dict[str, float] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=busy_timeout_s)
            # Before the first WAL access: no shared-memory wal-index (-shm), and the
            # file stays locked to this connection until `close` (see module doc).
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{self.path}: cannot use WAL journal (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise OutboxError(f"{self.path}: outbox schema {version}, expected 1")
            self._depth = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    # ------------------------------------------------------------- counters

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_counter(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    @property
    def last_seq(self) -> int:
        """The highest seq ever issued on this node (0 before the first event)."""
        return self._counter("seq")

    @property
    def bd_seq(self) -> int:
        """The birth/death sequence of the latest connect attempt."""
        return self._counter("bd_seq")

    @property
    def evicted(self) -> int:
        """How many non-panic events were evicted because the outbox was full."""
        return self._counter("evicted")

    def next_bd_seq(self) -> int:
        """Increment and durably store bd_seq; call once per connect attempt."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            value = self._counter("bd_seq") + 1
            self._set_counter("bd_seq", value)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"cannot store bd_seq: {exc}") from exc
        return value

    # --------------------------------------------------------------- events

    @property
    def depth(self) -> int:
        """Events waiting for an ack."""
        return self._depth

    def append(self, build: Callable[[str, int], EventBase]) -> StoredEvent:
        """Write one event durably and return it.

        `build(event_id, seq)` makes the proto event; it runs inside the
        transaction so the seq it is given is the one committed with it.
        """
        event_id = new_event_id()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._counter("seq") + 1
            event = build(event_id, seq)
            if event.event_id != event_id or event.seq != seq:
                raise OutboxError("event builder must use the event_id and seq it is given")
            event_type: str = getattr(event, "type")  # noqa: B009 - every event model has it
            stored = StoredEvent(
                seq=seq,
                event_id=event_id,
                event_type=event_type,
                topic=topic_for(event),
                payload=encode(event),
                created_at=time.time(),
            )
            self._make_room()
            self._db.execute(
                "INSERT INTO events (seq, event_id, event_type, topic, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    stored.seq,
                    stored.event_id,
                    stored.event_type,
                    stored.topic,
                    stored.payload,
                    stored.created_at,
                ),
            )
            self._set_counter("seq", seq)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"cannot write event: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        self._depth += 1  # `_make_room` already took off what it evicted
        return stored

    def _make_room(self) -> None:
        excess = self._depth + 1 - self.max_events
        if excess <= 0:
            return
        victims = self._db.execute(
            "SELECT seq, event_id, event_type FROM events WHERE event_type != ? "
            "ORDER BY seq LIMIT ?",
            (PANIC_TYPE, excess),
        ).fetchall()
        if len(victims) < excess:
            logger.warning(
                "outbox %s holds %d events, mostly panic; writing past max_events=%d",
                self.path,
                self._depth,
                self.max_events,
            )
        for seq, event_id, event_type in victims:
            self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._last_published.pop(event_id, None)
            logger.warning("outbox full: evicted %s event seq=%d id=%s", event_type, seq, event_id)
        if victims:
            self._set_counter("evicted", self._counter("evicted") + len(victims))
            self._depth -= len(victims)

    def pending(self, *, limit: int | None = None) -> list[StoredEvent]:
        """Unacked events, oldest (lowest seq) first."""
        sql = (
            "SELECT seq, event_id, event_type, topic, payload, created_at FROM events ORDER BY seq"
        )
        rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [
            StoredEvent(
                seq=int(r[0]),
                event_id=str(r[1]),
                event_type=str(r[2]),
                topic=str(r[3]),
                payload=bytes(r[4]),
                created_at=float(r[5]),
            )
            for r in rows
        ]

    def due(self, *, now: float, resend_after_s: float) -> list[StoredEvent]:
        """Unacked events never published, or last published `resend_after_s` ago."""
        return [
            e
            for e in self.pending()
            if now - self._last_published.get(e.event_id, float("-inf")) >= resend_after_s
        ]

    def mark_published(self, event_ids: Iterable[str], *, at: float) -> None:
        """Remember when these were last handed to MQTT (memory only; see module doc)."""
        for event_id in event_ids:
            self._last_published[event_id] = at

    def forget_published(self) -> None:
        """Treat every pending event as never published (after a reconnect)."""
        self._last_published.clear()

    def has_pending_panic(self) -> bool:
        """True while any panic event is waiting for its ack."""
        row = self._db.execute(
            "SELECT 1 FROM events WHERE event_type = ? LIMIT 1", (PANIC_TYPE,)
        ).fetchone()
        return row is not None

    def ack(self, event_ids: Iterable[str]) -> list[str]:
        """Delete acknowledged events; returns the ids that were actually pending."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            found: list[str] = []
            for event_id in ids:
                cursor = self._db.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
                if cursor.rowcount:
                    found.append(event_id)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"cannot delete acked events: {exc}") from exc
        for event_id in found:
            self._last_published.pop(event_id, None)
        self._depth -= len(found)
        return found

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("outbox %s: rollback failed", self.path)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            logger.warning("outbox %s: checkpoint on close failed", self.path, exc_info=True)
        self._db.close()
