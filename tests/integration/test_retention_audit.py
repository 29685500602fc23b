"""Expiry is audited: each retention run that deleted something appends one `system` record.

Plate reads expire a chunk per tick (`PlateRetentionJob`, SQLite and
PostgreSQL); on PostgreSQL whole monthly partitions of events (and plate
reads, watchlist hits) are dropped (`PartitionJob`). Every run that removed
something leaves one record in the hash chain saying what (data class or
partitions), up to when (the cut-off) and how much; a run that removed
nothing leaves none, and the chain still verifies afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from ulid import ULID

from fleet_server.alerting import PolicyCache
from fleet_server.audit import format_time, verify_chain
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models.audit import AuditRecord
from fleet_server.partitions import PartitionJob, event_partitions
from fleet_server.plates import PlateRetentionJob
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent
from tests.support.db import migrated

NOW = datetime(2025, 3, 1, 9, 0, 5, tzinfo=timezone.utc)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with migrated(db_url) as eng:
        yield eng


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    with migrated(pg_url) as eng:
        yield eng


def _plate(seq: int, *, event_id: str | None = None) -> PlateEvent:
    return PlateEvent(
        node_id="lhr-cam-0001", ts=NOW, event_id=event_id or new_event_id(), seq=seq,
        camera_id="gate", track_id=f"t{seq}", plate=f"LEA{seq:03d}", confidence=0.9, frames=3,
    )  # fmt: skip


def _store(engine: Engine, events: list[PlateEvent], now: datetime) -> None:
    envelopes, _ = decode_all([(topic_for(e), encode(e)) for e in events])
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()


def _records(engine: Engine, action: str) -> list[AuditRecord]:
    with Session(engine) as session:
        query = select(AuditRecord).where(col(AuditRecord.action) == action)
        return list(session.exec(query.order_by(col(AuditRecord.seq))).all())


def _chain_holds(engine: Engine) -> None:
    with Session(engine) as session:
        rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.seq))).all()
        verdict = verify_chain(rows)
    assert verdict.broken is None, verdict


def test_each_plate_retention_tick_that_deleted_reads_is_one_system_record(
    engine: Engine,
) -> None:
    _store(engine, [_plate(i + 1) for i in range(3)], NOW)
    job = PlateRetentionJob(days=10, chunk=2, every_s=60.0)
    later = NOW + timedelta(days=25)
    with Session(engine) as session:
        for tick in range(3):  # 2 reads, then 1 (not a full chunk), then not due
            job.run(session, later + timedelta(seconds=tick))
            session.commit()
        job.run(session, later + timedelta(minutes=5))  # due again, nothing left
        session.commit()
    records = _records(engine, "retention.plate_reads_expired")
    assert [r.detail["count"] for r in records] == [2, 1]
    cut_off = format_time(later - timedelta(days=10))
    first = records[0]
    assert (first.actor, first.object) == ("system", "data-class:plate_read")
    assert first.detail == {"received_before": cut_off, "days": 10, "count": 2}
    assert job.deleted == 3
    _chain_holds(engine)


def test_a_partition_drop_is_one_system_record_naming_the_partitions(
    pg_engine: Engine,
) -> None:
    now = datetime.now(timezone.utc)
    _store(pg_engine, [_plate(1, event_id=str(ULID.from_timestamp(now.timestamp())))], now)
    later = now + timedelta(days=200)  # this month ended more than 90 days before
    job = PartitionJob(retention_days={"event": 90.0, "plateread": 90.0})
    with Session(pg_engine) as session:
        job.run(session, later)
        session.commit()
    with pg_engine.connect() as conn:
        assert (now.year, now.month) not in event_partitions(conn)
    [record] = _records(pg_engine, "retention.partitions_dropped")
    month = f"p{now.year:04d}{now.month:02d}"
    assert record.actor == "system"
    assert record.object == "data-class:event,plateread"
    assert f"event_{month}" in record.detail["event"]["partitions"]
    assert f"plateread_{month}" in record.detail["plateread"]["partitions"]
    assert record.detail["event"]["received_before"] == format_time(later - timedelta(days=90))
    assert record.detail["event"]["days"] == 90.0
    # A run that drops nothing (the next hour, and the month after) records nothing more.
    with Session(pg_engine) as session:
        PartitionJob(retention_days={"event": 90.0}).run(session, later + timedelta(hours=2))
        session.commit()
    assert len(_records(pg_engine, "retention.partitions_dropped")) == 1
    _chain_holds(pg_engine)
