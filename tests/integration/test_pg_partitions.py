"""On PostgreSQL the event table is partitioned by month, and a redelivery is still a no-op.

Months are ranges of ULID event ids (their first characters are their
creation time), so `event_id` stays the unique key; partitions are made
ahead, take over ids that landed in the default partition, and are dropped
whole for retention. Real PostgreSQL (tests/support/db.py: skipped, saying
so, when unreachable); SQLite keeps one plain table.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from ulid import ULID

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.partitions import (
    DEFAULT_PARTITION,
    EventPartitionJob,
    event_partitions,
    month_bound,
    partition_names,
)
from fleet_server.schema import differences, migrate
from proto.codec import encode, topic_for
from proto.messages import PlateEvent
from tests.support.ingest import T0


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    yield eng
    eng.dispose()


def _plate_at(node: str, seq: int, written: datetime) -> PlateEvent:
    """A plate read whose event id the node made at `written` (its clock)."""
    event_id = str(ULID.from_timestamp(written.timestamp()))
    return PlateEvent(
        node_id=node, ts=T0, event_id=event_id, seq=seq, camera_id="cam-1", track_id=f"t{seq}",
        plate=f"LE{seq:04d}", confidence=0.9, frames=3,
    )  # fmt: skip


def _store(engine: Engine, events: list[PlateEvent], now: datetime) -> tuple[int, int]:
    envelopes, _ = decode_all([(topic_for(e), encode(e)) for e in events])
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        out = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()
    return out.inserted, out.duplicates


def _where(engine: Engine, event_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.exec_driver_sql(
                "SELECT tableoid::regclass::text FROM event WHERE event_id = %s", (event_id,)
            ).scalar_one()
        )


def test_a_month_bound_is_the_first_ulid_of_that_millisecond() -> None:
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert month_bound(at) == str(ULID.from_timestamp(at.timestamp()))[:10] + "0" * 16
    assert month_bound(at) < str(ULID.from_timestamp(at.timestamp() + 0.001))
    assert month_bound(at - timedelta(milliseconds=1)) < month_bound(at)


def test_the_migrated_table_is_partitioned_by_month_and_matches_the_models(
    engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    with engine.connect() as conn:
        months = event_partitions(conn)
        names = partition_names(conn)
    assert (now.year, now.month) in months
    assert len(months) >= 5  # last month, this one, three ahead
    assert DEFAULT_PARTITION in names
    assert differences(engine) == []  # partitions are not tables of the models


def test_events_land_in_their_month_and_a_redelivery_is_still_dropped(engine: Engine) -> None:
    now = datetime.now(timezone.utc)
    press_time = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    event = _plate_at("cam-0001", 1, press_time)
    assert _store(engine, [event], now) == (1, 0)
    assert _where(engine, event.event_id) == f"event_p{now.year:04d}{now.month:02d}"
    assert _store(engine, [event], now) == (0, 1)  # the same id again: dropped
    skewed = _plate_at("cam-0001", 2, datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert _store(engine, [skewed], now) == (1, 0)  # a clock far ahead: the default partition
    assert _where(engine, skewed.event_id) == DEFAULT_PARTITION


def test_the_job_makes_months_ahead_taking_over_default_rows_and_drops_expired_months(
    engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    # A node's clock ran ~9 months ahead: its id sits in the default partition for now.
    ahead = (now.replace(day=15) + timedelta(days=270)).replace(hour=0)
    early = _plate_at("cam-0002", 1, ahead)
    this_month = _plate_at("cam-0002", 2, now)
    _store(engine, [early, this_month], now)
    assert _where(engine, early.event_id) == DEFAULT_PARTITION

    later = ahead - timedelta(days=60)  # the server's clock reaches that month's window
    job = EventPartitionJob(retention_days=90.0)
    with Session(engine) as session:
        job.run(session, later)
        session.commit()
    assert _where(engine, early.event_id) == f"event_p{ahead.year:04d}{ahead.month:02d}"
    with engine.connect() as conn:
        months = event_partitions(conn)
        count = conn.exec_driver_sql("SELECT count(*) FROM event").scalar_one()
    assert (now.year, now.month) not in months  # ended more than 90 days before `later`
    assert count == 1  # this month's event went with its partition; the early one stays
    with Session(engine) as session:  # run again within the hour: nothing to do
        assert job.run(session, later + timedelta(minutes=5)) == []


def test_sqlite_keeps_one_plain_table_and_the_job_does_nothing(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        migrate(eng)
        with Session(eng) as session:
            assert EventPartitionJob(retention_days=1.0).run(session, T0) == []
        with eng.connect() as conn:
            assert partition_names(conn) == set()
        assert differences(eng) == []
    finally:
        eng.dispose()


def test_upgrading_a_database_with_events_partitions_them_and_downgrading_undoes_it(
    pg_url: str,
) -> None:
    from alembic import command

    from fleet_server.schema import _config

    eng = make_engine(pg_url)
    try:
        with eng.begin() as connection:
            command.upgrade(_config(connection), "0015")  # before partitions
        with Session(eng) as session:
            ensure_default_policies(session=session)
        now = datetime.now(timezone.utc)
        old = _plate_at("cam-0003", 1, now - timedelta(days=400))  # stored a year ago
        recent = _plate_at("cam-0003", 2, now)
        _store(eng, [old, recent], now)

        assert migrate(eng) == ("0015", "0016")
        assert _where(eng, recent.event_id) == f"event_p{now.year:04d}{now.month:02d}"
        then = now - timedelta(days=400)
        assert _where(eng, old.event_id) == f"event_p{then.year:04d}{then.month:02d}"
        assert differences(eng) == []

        with eng.begin() as connection:
            command.downgrade(_config(connection), "0015")
        with eng.connect() as conn:
            assert partition_names(conn) == set()
            ids = conn.exec_driver_sql("SELECT event_id FROM event ORDER BY event_id").all()
        assert [r[0] for r in ids] == sorted([old.event_id, recent.event_id])
    finally:
        eng.dispose()
