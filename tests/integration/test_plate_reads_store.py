"""A camera node's plate events become plate reads, searchable by key, node, district and
time; telemetry's camera list becomes per-camera health; old reads expire in chunks.

Real migrated database, SQLite and PostgreSQL (where `plateread` is partitioned by
month and written by COPY; skipped, saying so, when unreachable), the real batch loop
(`store_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Event, Node
from fleet_server.models.plate import NodeCamera, PlateRead
from fleet_server.plates import (
    PlateMatch,
    PlateRetentionJob,
    PlateSearchError,
    camera_health,
    search_plate_reads,
)
from fleet_server.schema import migrate
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent, Telemetry, WireModel
from tests.support.ingest import T0

NOW = datetime(2025, 3, 1, 9, 0, 5, tzinfo=timezone.utc)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """SQLite, and PostgreSQL (plate reads partitioned by month, written by COPY)."""
    eng = make_engine(db_url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    yield eng
    eng.dispose()


def plate(node: str, seq: int, text: str, **extra: object) -> PlateEvent:
    return PlateEvent.model_validate(
        {
            "node_id": node, "ts": T0 + timedelta(seconds=seq), "event_id": new_event_id(),
            "seq": seq, "camera_id": "gate", "track_id": f"t{seq}", "plate": text,
            "confidence": 0.9, "frames": 4, **extra,
        }
    )  # fmt: skip


def store(engine: Engine, messages: list[WireModel], now: datetime = NOW) -> int:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        out = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        session.commit()
    return out.inserted


def test_a_plate_event_is_an_event_row_and_a_plate_read_row_in_the_same_batch(
    engine: Engine,
) -> None:
    first = plate(
        "lhr-cam-0001", 1, "LEB-6881", canonical="LEB6881", province="Punjab",
        layout="punjab-district", box={"x": 10, "y": 20, "w": 120, "h": 50},
        snapshot_sha256="a" * 64,
    )  # fmt: skip
    assert store(engine, [first, plate("lhr-cam-0001", 2, "AZU-290")]) == 2
    assert store(engine, [first]) == 0  # a redelivery: no second event, no second read
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 2
        reads = {r.event_id: r for r in session.exec(select(PlateRead))}
    assert len(reads) == 2
    read = reads[first.event_id]
    assert (read.node_id, read.camera_id, read.plate, read.canonical) == (
        "lhr-cam-0001", "gate", "LEB-6881", "LEB6881",
    )  # fmt: skip
    assert (read.province, read.layout, read.crop_sha256) == ("Punjab", "punjab-district", "a" * 64)
    assert read.received_at == NOW
    assert read.ts == first.ts
    assert (read.frames, read.confidence) == (4, 0.9)
    # An older node without the rules' key: its text, normalised, is the key.
    assert {r.canonical for r in reads.values()} == {"LEB6881", "AZU290"}


def test_search_exact_prefix_fuzzy_node_district_time_and_paging(engine: Engine) -> None:
    texts = ["LEB6881", "LEB6882", "LE86881", "LEA1234", "AZU290"]
    store(engine, [plate("lhr-cam-0001", i + 1, t) for i, t in enumerate(texts)])
    store(engine, [plate("khi-cam-0001", 1, "LEB6881")], now=NOW + timedelta(hours=1))
    with Session(engine) as session:
        node = session.get(Node, "khi-cam-0001")
        assert node is not None
        node.district = "karachi-south"
        session.commit()

        def keys(
            query: str | None, match: PlateMatch = PlateMatch.EXACT, **kw: Any
        ) -> list[tuple[str, str]]:
            data, _ = search_plate_reads(session=session, query=query, match=match, **kw)
            return sorted((r.canonical, r.node_id) for r in data)

        assert keys("leb-6881") == [("LEB6881", "khi-cam-0001"), ("LEB6881", "lhr-cam-0001")]
        assert [k for k, _ in keys("LEB", PlateMatch.PREFIX)] == ["LEB6881", "LEB6881", "LEB6882"]
        # One look-alike away: 8/B at the third place; 6882 differs by a non-look-alike.
        fuzzy = keys("LEB6881", PlateMatch.FUZZY, node_id="lhr-cam-0001")
        assert fuzzy == [("LE86881", "lhr-cam-0001"), ("LEB6881", "lhr-cam-0001")]
        assert keys("LEB6881", district="karachi-south") == [("LEB6881", "khi-cam-0001")]
        assert keys("LEB6881", since=NOW + timedelta(minutes=30)) == [("LEB6881", "khi-cam-0001")]
        assert keys("LEB6881", until=NOW + timedelta(minutes=30)) == [("LEB6881", "lhr-cam-0001")]
        page, count = search_plate_reads(session=session, query=None, offset=2, limit=2)
        assert count == 6
        assert len(page) == 2
        newest, _ = search_plate_reads(session=session, query=None, limit=1)
        assert newest[0].node_id == "khi-cam-0001"  # newest first
        assert newest[0].district == "karachi-south"
        with pytest.raises(PlateSearchError):
            search_plate_reads(session=session, query="--")


def test_telemetry_camera_list_is_the_node_s_camera_health(engine: Engine) -> None:
    def report(seconds: int, cameras: list[dict[str, object]]) -> Telemetry:
        return Telemetry.model_validate(
            {"node_id": "lhr-cam-0001", "ts": T0 + timedelta(seconds=seconds),
             "uptime_s": 10.0 + seconds, "cameras": cameras}
        )  # fmt: skip

    north = {"camera_id": "north", "frames_in": 100, "frames_dropped": 2, "motion_ratio": 0.2,
             "detector_ms": {"p50": 60.0, "p95": 90.0}, "reader_ms": {"p50": 40.0, "p95": 70.0},
             "plates_per_hour": 30, "shed": "none", "analytics_rate": 1.0}  # fmt: skip
    south: dict[str, object] = {"camera_id": "south", "shed": "stopped", "fault": "camera_lost"}
    store(engine, [report(1, [north, south])])
    store(engine, [report(2, [{**north, "frames_in": 150}])])  # south removed from the node
    with Session(engine) as session:
        cameras = camera_health(session=session)
        assert [(c.camera_id, c.frames_in, c.reader_ms_p95) for c in cameras] == [
            ("north", 150, 70.0)
        ]
        assert len(session.exec(select(NodeCamera)).all()) == 1


def test_retention_deletes_old_reads_a_chunk_per_tick(engine: Engine) -> None:
    store(engine, [plate("lhr-cam-0001", i + 1, f"LEA{i:03d}") for i in range(5)])
    store(engine, [plate("lhr-cam-0001", 10, "LEB6881")], now=NOW + timedelta(days=20))
    job = PlateRetentionJob(days=10, chunk=2, every_s=60.0)
    later = NOW + timedelta(days=25)
    with Session(engine) as session:
        for tick in range(3):  # a full chunk runs again at the next tick
            job.run(session, later + timedelta(seconds=tick))
            session.commit()
        assert job.deleted == 5
        job.run(session, later + timedelta(seconds=4))  # not due yet: nothing read
        left = [r.canonical for r in session.exec(select(PlateRead))]
        assert left == ["LEB6881"]
        assert len(session.exec(select(Event)).all()) == 6  # the event rows stay


def test_the_server_runs_plate_retention_when_days_are_configured() -> None:
    from fleet_server.settings import Settings
    from fleet_server.timers import default_jobs

    assert Settings().plate_retention_days == 90.0
    jobs = default_jobs(ack_timeout_s=120.0, offline_grace_s=15.0, plate_retention_days=30.0)
    (job,) = [j for j in jobs if isinstance(j, PlateRetentionJob)]
    assert job.days == 30.0
    kept = default_jobs(ack_timeout_s=120.0, offline_grace_s=15.0)
    assert not any(isinstance(j, PlateRetentionJob) for j in kept)
