"""A node reporting its cameras in turns keeps every camera's health on the server.

A node with more than eight cameras lists a share of them per telemetry
report, with ``cameras_total``; the server replaces only the listed cameras'
rows, so the others keep their last figures instead of vanishing between
turns. A report that lists every camera (an older node, or eight or fewer)
still replaces the node's whole list. Real migrated database (SQLite and
PostgreSQL where reachable), the real batch loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import PolicyCache, ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.plates import camera_health
from fleet_server.schema import migrate
from proto.codec import encode, topic_for
from proto.messages import Telemetry
from tests.support.ingest import T0

NOW = datetime(2025, 3, 1, 9, 0, 5, tzinfo=timezone.utc)
NODE = "lhr-cam-0012"
IDS = [f"cam-{i:02d}" for i in range(12)]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    yield eng
    eng.dispose()


def report(seconds: int, ids: list[str], *, frames: int, total: int | None) -> Telemetry:
    return Telemetry.model_validate(
        {
            "node_id": NODE,
            "ts": T0 + timedelta(seconds=seconds),
            "uptime_s": 10.0 + seconds,
            "cameras": [{"camera_id": c, "frames_in": frames} for c in ids],
            "cameras_total": total,
        }
    )


def store(engine: Engine, *messages: Telemetry) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(engine, expire_on_commit=False) as session:
        policies = PolicyCache(ack_timeout_s=120.0).get(session)
        store_batch(session=session, envelopes=envelopes, now=NOW, policies=policies)
        session.commit()


def health(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {c.camera_id: c.frames_in for c in camera_health(session=session, node_id=NODE)}


def test_turns_update_the_listed_cameras_and_keep_the_others(engine: Engine) -> None:
    store(engine, report(1, IDS[:8], frames=100, total=12))
    store(engine, report(2, IDS[8:] + IDS[:4], frames=200, total=12))
    assert health(engine) == {
        **{c: 200 for c in IDS[:4]},
        **{c: 100 for c in IDS[4:8]},
        **{c: 200 for c in IDS[8:]},
    }
    # Both turns in one batch: the later one's figures win for the cameras it lists.
    store(
        engine,
        report(3, IDS[4:12], frames=300, total=12),
        report(4, IDS[:8], frames=400, total=12),
    )
    assert health(engine) == {**{c: 400 for c in IDS[:8]}, **{c: 300 for c in IDS[8:]}}


def test_a_report_listing_every_camera_still_replaces_the_node_s_list(engine: Engine) -> None:
    store(engine, report(1, IDS[:8], frames=100, total=12))
    store(engine, report(2, IDS[8:] + IDS[:4], frames=200, total=12))
    # The node now runs three cameras and lists them all (or is an older node: no total).
    store(engine, report(3, IDS[:3], frames=500, total=3))
    assert health(engine) == {c: 500 for c in IDS[:3]}
    store(engine, report(4, IDS[:2], frames=600, total=None))
    assert health(engine) == {c: 600 for c in IDS[:2]}
