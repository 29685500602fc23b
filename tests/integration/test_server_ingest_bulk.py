"""Ingest's bulk paths store exactly what the plain ones did (docs/fleet-server.md, Ingest).

- `Node` rows are not loaded for nodes that only sent plain events; every
  node's `last_seen_at`/`last_seq` is written with one statement per batch.
- On SQLite, events and node updates go to the driver as multi-row
  statements with pre-formatted datetimes: same rows, byte for byte, as the
  Core statements write.
- The `payload` column holds the bytes as received (validated by decode).
- The hand-off queue gives the worker everything waiting at once, blocks
  when full, and `stop` still processes what came before it.
- The server's SQLite connections commit with `synchronous=FULL`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import BatchQueue, IngestWorker, decode_all, sqlite_datetime, store_batch
from fleet_server.ingest import writer as ingest_writer
from fleet_server.models import Alert, Event, IngestRejection, Node, PowerState, SequenceGap
from fleet_server.schema import migrate
from proto.codec import decode_uplink, encode, topic_for
from proto.ids import new_event_id
from proto.messages import (
    Birth,
    Capability,
    EventBase,
    Firmware,
    PanicEvent,
    PlateEvent,
    PowerEvent,
    Status,
    TamperEvent,
)
from tests.support.ingest import T0, migrated_engine

NOW = datetime(2025, 3, 1, 9, 0, 5, 250_000, tzinfo=timezone.utc)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = migrated_engine(tmp_path / "fleet.db")
    yield eng
    eng.dispose()


def _plate(node: str, seq: int, *, second: int = 0) -> EventBase:
    return PlateEvent(
        node_id=node, ts=T0 + timedelta(seconds=second, microseconds=seq), event_id=new_event_id(),
        seq=seq, camera_id="cam-1", track_id=f"t{seq}", plate=f"LE{seq:04d}", confidence=0.9,
        frames=3,
    )  # fmt: skip


def _power(node: str, seq: int) -> EventBase:
    return PowerEvent(
        node_id=node, ts=T0, event_id=new_event_id(), seq=seq, power="policy_step",
        battery_soc=0.5, autonomy_h=20.0, policy_step=1,
    )  # fmt: skip


def _wire(*messages: object) -> list[tuple[str, bytes]]:
    return [(topic_for(m), encode(m)) for m in messages]  # type: ignore[arg-type]


def _store(engine: Engine, raw: list[tuple[str, bytes]], *, now: datetime = NOW) -> None:
    envelopes, rejections = decode_all(raw)
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()


def _mixed_batches() -> list[list[tuple[str, bytes]]]:
    hello = Status(node_id="cam-0001", ts=T0, state="online", bd_seq=1)
    birth = Birth(
        node_id="cam-0001", ts=T0, bd_seq=1, serial="S1", hardware="bench",
        firmware=Firmware(version="0.1.0"), config_hash="0" * 64, site_id="site-1",
        district="lahore-gulberg", capabilities=[Capability.CAMERA],
    )  # fmt: skip
    first = _wire(
        hello, birth,
        _plate("cam-0001", 1), _plate("cam-0002", 1), _plate("cam-0002", 2),
        _power("cam-0003", 1),
        TamperEvent(node_id="cam-0004", ts=T0, event_id=new_event_id(), seq=1,
                    tamper="camera_blocked"),
        PanicEvent(node_id="cam-0005", ts=T0, event_id=new_event_id(), seq=1),
    )  # fmt: skip
    # A gap on cam-0002 (3..4 missing), a late lower seq on cam-0001, a redelivery.
    second = _wire(_plate("cam-0002", 5), _plate("cam-0001", 3), _plate("cam-0001", 2))
    second.append(first[2])
    return [first, second]


_ROWS = {
    "event": "SELECT event_id, node_id, type, seq, ts, received_at, payload, "
    "alert_id IS NOT NULL FROM event ORDER BY event_id",
    "node": "SELECT node_id, last_seq, last_seen_at, online, serial, site_id "
    "FROM node ORDER BY node_id",
    "gap": "SELECT node_id, first_missing, last_missing FROM sequencegap ORDER BY node_id",
}


def _raw_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(db) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in _ROWS.items()}


def test_sqlite_multi_row_path_writes_the_same_rows_as_the_core_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = _mixed_batches()
    results = []
    for fast in (True, False):
        monkeypatch.setattr(ingest_writer, "MULTI_ROW_WRITES", fast)
        db = tmp_path / f"fast-{fast}.db"
        eng = migrated_engine(db)
        for i, batch in enumerate(batches):
            _store(eng, batch, now=NOW + timedelta(seconds=i))
        eng.dispose()
        results.append(_raw_rows(db))
    assert results[0] == results[1]
    rows = results[0]
    # cam-0001's gap (2) closed in the same batch by its late seq 2; cam-0002's stays.
    assert [r[:3] for r in rows["gap"]] == [("cam-0002", 3, 4)]
    nodes = {r[0]: r for r in rows["node"]}
    assert nodes["cam-0001"][1] == 3  # a late lower seq never lowers last_seq
    assert nodes["cam-0002"][1] == 5
    assert nodes["cam-0001"][2] == "2025-03-01 09:00:06.250000"  # last batch's `now`
    assert nodes["cam-0003"][2] == "2025-03-01 09:00:05.250000"  # only in the first
    assert nodes["cam-0001"][4:] == ("S1", "site-1")  # birth applied through the ORM
    assert len(rows["event"]) == 9  # the redelivery is not stored twice


def test_the_postgresql_multi_row_path_writes_the_same_rows_as_the_core_statements(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = pg_url
    batches = _mixed_batches()
    results = []
    for fast in (True, False):
        monkeypatch.setattr(ingest_writer, "MULTI_ROW_WRITES", fast)
        eng = make_engine(db_url)
        with eng.begin() as conn:  # a fresh schema for each path
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            for table in reversed(SQLModel.metadata.sorted_tables):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}" CASCADE')
        migrate(eng)
        with Session(eng) as session:
            ensure_default_policies(session=session)
        for i, batch in enumerate(batches):
            _store(eng, batch, now=NOW + timedelta(seconds=i))
        with eng.connect() as conn:
            results.append({q: conn.exec_driver_sql(sql).fetchall() for q, sql in _ROWS.items()})
        eng.dispose()
    assert results[0] == results[1]
    nodes = {r[0]: r for r in results[0]["node"]}
    assert (nodes["cam-0001"][1], nodes["cam-0002"][1]) == (3, 5)
    assert nodes["cam-0001"][2] == datetime(2025, 3, 1, 9, 0, 6, 250_000)  # naive UTC
    assert len(results[0]["event"]) == 9


def test_nodes_with_only_plain_events_are_created_and_touched(engine: Engine) -> None:
    _store(engine, _wire(_plate("cam-0100", 7), _plate("cam-0100", 8)))
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.node_id == "cam-0100")).one()
        assert node.last_seq == 8
        assert node.last_seen_at == NOW
        assert node.created_at == NOW
    _store(engine, _wire(_plate("cam-0100", 9)), now=NOW + timedelta(minutes=1))
    with Session(engine) as session:
        node = session.exec(select(Node).where(Node.node_id == "cam-0100")).one()
        assert (node.last_seq, node.last_seen_at) == (9, NOW + timedelta(minutes=1))
        assert session.exec(select(SequenceGap)).all() == []


def test_alerting_and_power_events_still_open_alerts_and_power_state(engine: Engine) -> None:
    _store(
        engine,
        _wire(
            PanicEvent(node_id="cam-0200", ts=T0, event_id=new_event_id(), seq=1),
            _power("cam-0201", 1),
            _power("cam-0201", 2),  # the second finds the row the first made
        ),
    )
    with Session(engine) as session:
        alert = session.exec(select(Alert).where(Alert.node_id == "cam-0200")).one()
        event = session.exec(select(Event).where(Event.node_id == "cam-0200")).one()
        assert event.alert_id == alert.id
        state = session.exec(select(PowerState).where(PowerState.node_id == "cam-0201")).one()
        assert state.policy_step == 1
        assert session.exec(select(Node).where(Node.node_id == "cam-0201")).one().last_seq == 2


def test_the_payload_column_holds_the_bytes_as_received(engine: Engine) -> None:
    event = _plate("cam-0300", 1)
    # Valid, but not canonical: keys in another order and spaces.
    received = json.dumps(json.loads(encode(event)), indent=1).encode()
    assert received != encode(event)
    _store(engine, [(topic_for(event), received)])
    # Envelopes made without the received bytes fall back to the canonical dump.
    other = _plate("cam-0300", 2)
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        envelopes = [decode_uplink(topic_for(other), encode(other))]
        store_batch(session=session, envelopes=envelopes, now=NOW, policies=policies)
        session.commit()
    with Session(engine) as session:
        stored = {e.event_id: e.payload for e in session.exec(select(Event))}
    assert stored[event.event_id] == received.decode()
    assert stored[other.event_id] == encode(other).decode()


def test_sqlite_datetime_matches_what_sqlalchemy_stores(engine: Engine, tmp_path: Path) -> None:
    odd = datetime(2025, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=5)))  # PKT, no µs
    assert sqlite_datetime(odd) == "2025-03-01 09:00:00.000000"
    with pytest.raises(ValueError, match="naive"):
        sqlite_datetime(datetime(2025, 3, 1))
    with Session(engine) as session:
        session.add(Node(node_id="cam-0400", created_at=odd, last_seen_at=odd))
        session.commit()
    with sqlite3.connect(tmp_path / "fleet.db") as conn:
        (raw,) = conn.execute("SELECT last_seen_at FROM node").fetchone()
    assert raw == sqlite_datetime(odd)


def test_a_refused_topic_is_refused_every_time(engine: Engine) -> None:
    # The topic parse is cached; refusals must not be.
    bad = [("nb/v1/cam-0500/cmd/reboot", b"{}")] * 3
    envelopes, rejections = decode_all(bad)
    assert envelopes == []
    assert sum(n for n, _, _ in rejections.values()) == 3


def test_the_server_database_commits_with_full_sync(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_batch_queue_hands_over_everything_waiting_and_blocks_when_full() -> None:
    q: BatchQueue[int] = BatchQueue(3)
    for i in range(3):
        q.put(i)
    done = threading.Event()

    def produce() -> None:
        q.put(3)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(0.2)  # full: the producer waits (backpressure, not a drop)
    assert q.get_batch(2) == [0, 1]
    assert done.wait(5)
    assert q.get_batch(10) == [2, 3]
    assert len(q) == 0


def test_stop_processes_what_was_queued_before_it(engine: Engine) -> None:
    sent: list[tuple[str, bytes]] = []

    class _Sent:
        def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
            sent.append((topic, payload))

    worker = IngestWorker(engine=engine, publisher=_Sent(), notify=lambda _n: None,
                          ack_timeout_s=120.0)  # fmt: skip
    raw = _wire(*(_plate(f"cam-06{i:02d}", 1) for i in range(50)))
    raw.append(("nb/v1/cam-0699/event/plate", b"not json"))
    for topic, payload in raw:
        worker.submit(topic, payload)
    worker.start()
    worker.stop(timeout=30)
    assert worker.stats.received == 51
    assert worker.stats.inserted == 50
    assert worker.stats.rejected == 1
    assert len(sent) == 50
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 50
        assert session.exec(select(IngestRejection)).one().node_id == "cam-0699"
