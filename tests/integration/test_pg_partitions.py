"""On PostgreSQL the event and plate read tables are partitioned by month; a redelivery is a no-op.

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
from sqlmodel import Session, col, select
from ulid import ULID

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models.watchlist import WatchlistHit
from fleet_server.partitions import (
    DEFAULT_PARTITION,
    PLATEREAD,
    WATCHLISTHIT,
    PartitionJob,
    event_partitions,
    month_bound,
    monthly_partitions,
    partition_names,
)
from fleet_server.schema import differences, migrate
from proto.codec import encode, topic_for
from proto.messages import PlateEvent, WatchlistHitEvent
from tests.support.db import migrated
from tests.support.ingest import T0


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    with migrated(pg_url) as eng:
        yield eng


def _plate_at(node: str, seq: int, written: datetime) -> PlateEvent:
    """A plate read whose event id the node made at `written` (its clock)."""
    event_id = str(ULID.from_timestamp(written.timestamp()))
    return PlateEvent(
        node_id=node, ts=T0, event_id=event_id, seq=seq, camera_id="cam-1", track_id=f"t{seq}",
        plate=f"LE{seq:04d}", confidence=0.9, frames=3,
    )  # fmt: skip


def _hit_at(node: str, seq: int, written: datetime) -> WatchlistHitEvent:
    """A watchlist hit whose event id the node made at `written` (its clock)."""
    return WatchlistHitEvent(
        node_id=node, ts=T0, event_id=str(ULID.from_timestamp(written.timestamp())), seq=seq,
        watchlist_id="stolen-cars", watchlist_version=1, entry_id="e1", match="exact",
        camera_id="cam-1", track_id=f"t{seq}", plate="LEA1234", listed="LEA1234",
        confidence=0.9, frames=3,
    )  # fmt: skip


def _store(
    engine: Engine, events: list[PlateEvent] | list[WatchlistHitEvent], now: datetime
) -> tuple[int, int]:
    envelopes, _ = decode_all([(topic_for(e), encode(e)) for e in events])
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        out = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()
    return out.inserted, out.duplicates


def _where(engine: Engine, event_id: str, table: str = "event") -> str:
    with engine.connect() as conn:
        return str(
            conn.exec_driver_sql(
                f"SELECT tableoid::regclass::text FROM {table} WHERE event_id = %s",
                (event_id,),
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
    job = PartitionJob(retention_days={"event": 90.0})
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


def test_a_plate_read_lands_in_its_event_s_month_and_a_redelivery_adds_no_second_read(
    engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    with engine.connect() as conn:
        assert (now.year, now.month) in monthly_partitions(conn, PLATEREAD)
        assert PLATEREAD.default in partition_names(conn)
    read = _plate_at("cam-0004", 1, now)
    assert _store(engine, [read], now) == (1, 0)
    assert _where(engine, read.event_id, "plateread") == PLATEREAD.month(now.year, now.month)
    assert _store(engine, [read], now) == (0, 1)
    skewed = _plate_at("cam-0004", 2, datetime(2099, 1, 1, tzinfo=timezone.utc))
    _store(engine, [skewed], now)
    assert _where(engine, skewed.event_id, "plateread") == PLATEREAD.default
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM plateread").scalar_one() == 2


def test_a_watchlist_hit_lands_in_its_event_s_month_and_goes_with_the_events_retention(
    engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    with engine.connect() as conn:
        assert (now.year, now.month) in monthly_partitions(conn, WATCHLISTHIT)
        assert WATCHLISTHIT.default in partition_names(conn)
    hit = _hit_at("cam-0007", 1, now)
    skewed = _hit_at("cam-0007", 2, datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert _store(engine, [hit, skewed], now) == (2, 0)
    assert _where(engine, hit.event_id, "watchlisthit") == WATCHLISTHIT.month(now.year, now.month)
    assert _where(engine, skewed.event_id, "watchlisthit") == WATCHLISTHIT.default
    assert _store(engine, [hit], now) == (0, 1)  # a redelivery adds no second hit
    with Session(engine) as session:  # the hit queue's reads: by id, by list and time
        stored = session.get(WatchlistHit, hit.event_id)
        listed = session.exec(
            select(WatchlistHit)
            .where(col(WatchlistHit.watchlist_name) == "stolen-cars")
            .order_by(col(WatchlistHit.received_at).desc())
        ).all()
    assert stored is not None
    assert stored.alert_id is not None
    assert {h.event_id for h in listed} == {hit.event_id, skewed.event_id}

    later = now + timedelta(days=130)
    with Session(engine) as session:
        PartitionJob(retention_days={"event": 90.0, "watchlisthit": 90.0}).run(session, later)
        session.commit()
    with engine.connect() as conn:
        assert (now.year, now.month) not in monthly_partitions(conn, WATCHLISTHIT)
        left = conn.exec_driver_sql("SELECT event_id FROM watchlisthit").all()
    assert [r[0] for r in left] == [skewed.event_id]  # the default partition is never dropped


def test_plate_months_go_by_plate_retention_but_not_while_they_hold_recent_reads(
    engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    month_ago = now.replace(day=1) - timedelta(days=20)  # inside last month
    old = _plate_at("cam-0005", 1, month_ago)
    _store(engine, [old], month_ago)  # received when written
    backlog = _plate_at("cam-0006", 1, month_ago)
    _store(engine, [backlog], now)  # written last month, received only now (an outbox backlog)
    last = PLATEREAD.month(month_ago.year, month_ago.month)
    assert _where(engine, backlog.event_id, "plateread") == last

    # The cut-off falls where last month ended: the month has expired, `backlog` has not.
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    later = this_month + timedelta(days=45)
    job = PartitionJob(retention_days={"event": None, "plateread": 45.0})
    with Session(engine) as session:
        job.run(session, later)
        session.commit()
    with engine.connect() as conn:
        months = monthly_partitions(conn, PLATEREAD)
        event_months = event_partitions(conn)
    assert (month_ago.year, month_ago.month) in months  # `backlog` is within 45 days
    assert (month_ago.year, month_ago.month) in event_months  # event retention unset: kept

    much_later = now + timedelta(days=46)
    with Session(engine) as session:
        PartitionJob(retention_days={"plateread": 45.0}).run(session, much_later)
        session.commit()
    with engine.connect() as conn:
        months = monthly_partitions(conn, PLATEREAD)
        reads = conn.exec_driver_sql("SELECT count(*) FROM plateread").scalar_one()
        events = conn.exec_driver_sql("SELECT count(*) FROM event").scalar_one()
    assert (month_ago.year, month_ago.month) not in months
    assert reads == 0  # both of last month's reads went with it
    assert events == 2  # the event rows follow the events' own retention


def test_the_server_s_partition_job_takes_each_table_s_own_retention() -> None:
    from fleet_server.timers import default_jobs

    jobs = default_jobs(
        ack_timeout_s=120.0, offline_grace_s=15.0, plate_retention_days=30.0,
        event_partitions=True, event_retention_days=400.0,
    )  # fmt: skip
    (job,) = [j for j in jobs if isinstance(j, PartitionJob)]
    assert dict(job.retention_days) == {
        "event": 400.0, "plateread": 30.0, "powersample": 30.0, "watchlisthit": 400.0,
    }  # fmt: skip
    assert {t.table for t in job.tables} == {"event", "plateread", "powersample", "watchlisthit"}


def test_sqlite_keeps_one_plain_table_and_the_job_does_nothing(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        migrate(eng)
        with Session(eng) as session:
            assert PartitionJob(retention_days={"event": 1.0}).run(session, T0) == []
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
        hits = [_hit_at("cam-0008", 1, now - timedelta(days=400)), _hit_at("cam-0008", 2, now)]
        _store(eng, hits, now)
        hit_events = [h.event_id for h in hits]  # each hit is an event too

        assert migrate(eng)[0] == "0015"
        assert _where(eng, recent.event_id) == f"event_p{now.year:04d}{now.month:02d}"
        then = now - timedelta(days=400)
        assert _where(eng, old.event_id) == f"event_p{then.year:04d}{then.month:02d}"
        # Their plate reads (migration 0017) sit in the same months of `plateread`.
        assert _where(eng, old.event_id, "plateread") == PLATEREAD.month(then.year, then.month)
        assert _where(eng, recent.event_id, "plateread") == PLATEREAD.month(now.year, now.month)
        # And the watchlist hits (migration 0019) in theirs.
        months = [WATCHLISTHIT.month(at.year, at.month) for at in (then, now)]
        assert [_where(eng, h.event_id, "watchlisthit") for h in hits] == months
        assert differences(eng) == []

        with eng.begin() as connection:
            command.downgrade(_config(connection), "0015")
        with eng.connect() as conn:
            assert partition_names(conn) == set()
            ids = conn.exec_driver_sql("SELECT event_id FROM event ORDER BY event_id").all()
            reads = conn.exec_driver_sql("SELECT event_id FROM plateread ORDER BY 1").all()
            hit_ids = conn.exec_driver_sql("SELECT event_id FROM watchlisthit ORDER BY 1").all()
        assert [r[0] for r in ids] == sorted([old.event_id, recent.event_id, *hit_events])
        assert [r[0] for r in reads] == sorted([old.event_id, recent.event_id])
        assert [r[0] for r in hit_ids] == sorted(hit_events)
        assert differences(eng) == []  # the plain tables, keys and indexes are back
    finally:
        eng.dispose()
