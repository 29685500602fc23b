"""Ingest on PostgreSQL stores events by COPY, with the same rows and the same idempotency.

The COPY path (a temporary staging table, then `INSERT … SELECT … ON
CONFLICT (event_id) DO NOTHING`) must store exactly what the multi-row
INSERT and the SQLAlchemy Core paths store, drop redeliveries, and drop —
not fail on — an event another worker stored between this batch's read and
its write. Real PostgreSQL (tests/support/db.py: skipped, saying so, when
unreachable).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import BatchOutcome, decode_all, store_batch
from fleet_server.ingest import store as ingest_store
from fleet_server.ingest import writer as ingest_writer
from fleet_server.schema import migrate
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import EventBase, PanicEvent, PlateEvent, PowerEvent
from tests.support.ingest import T0

NOW = datetime(2025, 3, 1, 9, 0, 5, 250_000, tzinfo=timezone.utc)
_ROWS = {
    "event": "SELECT event_id, node_id, type, seq, ts, received_at, payload, "
    "alert_id IS NOT NULL, ts_implausible FROM event ORDER BY event_id",
    "node": "SELECT node_id, last_seq, last_seen_at FROM node ORDER BY node_id",
    "gap": "SELECT node_id, first_missing, last_missing FROM sequencegap ORDER BY node_id",
    "alert": "SELECT node_id, type, state FROM alert ORDER BY node_id",
    "plateread": "SELECT event_id, node_id, camera_id, received_at, ts, plate, canonical, "
    "country, confidence, frames FROM plateread ORDER BY event_id",  # by COPY too
}


def _plate(node: str, seq: int) -> EventBase:
    return PlateEvent(
        node_id=node, ts=T0 + timedelta(microseconds=seq), event_id=new_event_id(), seq=seq,
        camera_id="cam-1", track_id=f"t{seq}", plate=f"LE{seq:04d}", confidence=0.9, frames=3,
    )  # fmt: skip


def _batches() -> list[list[tuple[str, bytes]]]:
    power = PowerEvent(
        node_id="cam-0003", ts=T0, event_id=new_event_id(), seq=1,
        power="policy_step", battery_soc=0.5, autonomy_h=20.0, policy_step=1,
    )  # fmt: skip
    press = PanicEvent(node_id="cam-0005", ts=T0, event_id=new_event_id(), seq=1)
    first = [_plate("cam-0001", 1), _plate("cam-0002", 1), _plate("cam-0002", 2), power, press]
    # A gap on cam-0002, a gap on cam-0001 filled late in the batch, and two redeliveries.
    second = [_plate("cam-0002", 5), _plate("cam-0001", 3), _plate("cam-0001", 2), first[2], press]
    return [[(topic_for(m), encode(m)) for m in batch] for batch in (first, second)]


BATCHES = _batches()  # made once: the three paths store the very same events


def _fresh(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}" CASCADE')
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)


def _store(engine: Engine, raw: list[tuple[str, bytes]], now: datetime) -> BatchOutcome:
    envelopes, rejections = decode_all(raw)
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        out = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()
    return out


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    _fresh(eng)
    yield eng
    eng.dispose()


def test_copy_stores_the_same_rows_as_multi_row_insert_and_core(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: dict[str, dict[str, list[Any]]] = {}
    outcomes: dict[str, list[tuple[int, int]]] = {}
    for path, multi_row, copy in (("copy", True, True), ("insert", True, False),
                                  ("core", False, False)):  # fmt: skip
        monkeypatch.setattr(ingest_writer, "MULTI_ROW_WRITES", multi_row)
        monkeypatch.setattr(ingest_writer, "COPY_WRITES", copy)
        _fresh(engine)
        outs = [_store(engine, b, NOW + timedelta(seconds=i)) for i, b in enumerate(BATCHES)]
        outcomes[path] = [(o.inserted, o.duplicates) for o in outs]
        with engine.connect() as conn:
            results[path] = {
                q: list(conn.exec_driver_sql(sql).fetchall()) for q, sql in _ROWS.items()
            }
    assert results["copy"] == results["insert"] == results["core"]
    assert outcomes["copy"] == outcomes["core"] == [(5, 0), (3, 2)]
    rows = results["copy"]
    assert len(rows["event"]) == 8  # redeliveries are not stored twice
    assert len(rows["plateread"]) == 6  # one read per new plate event
    assert [r[:2] for r in rows["node"]] == [("cam-0001", 3), ("cam-0002", 5), ("cam-0003", 1),
                                             ("cam-0005", 1)]  # fmt: skip
    assert rows["node"][0][2] == datetime(2025, 3, 1, 9, 0, 6, 250_000)  # naive UTC, last batch
    # cam-0001's gap (2) is closed by its late seq 2 in the same batch; cam-0002's stays.
    assert [r[:3] for r in rows["gap"]] == [("cam-0002", 3, 4)]
    assert rows["alert"] == [("cam-0005", "panic", "new")]  # one alert for the press


def test_an_event_stored_by_another_worker_meanwhile_is_dropped_not_fatal(
    engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node is known and online, so this batch locks nothing before its write
    # (a new node's uncommitted row would make the other worker wait on us).
    _store(engine, [(topic_for(m), encode(m)) for m in (_plate("cam-0042", 1),)], NOW)
    raced, second = _plate("cam-0042", 2), _plate("cam-0042", 3)
    other = make_engine(pg_url)
    real_write = ingest_writer.write_events_and_nodes
    raced_once: list[bool] = []

    def racing_write(session: Session, rows: list[dict[str, object]], *args: Any) -> set[str]:
        # After this batch read which events exist, another worker commits one of them.
        if not raced_once:
            raced_once.append(True)
            _store(other, [(topic_for(raced), encode(raced))], NOW)
        return real_write(session, rows, *args)

    monkeypatch.setattr(ingest_store, "write_events_and_nodes", racing_write)
    try:
        out = _store(engine, [(topic_for(m), encode(m)) for m in (raced, second)], NOW)
    finally:
        other.dispose()
    assert (out.inserted, out.duplicates) == (1, 1)
    assert out.acks == {"cam-0042": [raced.event_id, second.event_id]}  # both acked
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT seq FROM event ORDER BY seq").fetchall()
        reads = conn.exec_driver_sql("SELECT plate FROM plateread ORDER BY plate").fetchall()
    assert [r[0] for r in stored] == [1, 2, 3]  # each once
    assert [r[0] for r in reads] == ["LE0001", "LE0002", "LE0003"]  # its plate read too


def test_a_rolled_back_batch_leaves_the_staging_table_usable(engine: Engine) -> None:
    """The staging table made in a rolled-back transaction is gone; the next batch makes it."""
    first = _plate("cam-0050", 1)
    envelopes, _ = decode_all([(topic_for(first), encode(first))])
    with Session(engine) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        store_batch(session=session, envelopes=envelopes, now=NOW, policies=policies)
        session.rollback()
    for i in range(2):  # the same pooled connection, twice: made once, emptied by each commit
        out = _store(engine, [(topic_for(m), encode(m)) for m in (_plate("cam-0050", i + 1),)], NOW)
        assert out.inserted == 1
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM event").scalar_one()
    assert count == 2
