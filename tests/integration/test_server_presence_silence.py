"""A node that sent nothing for several telemetry intervals is offline (issue 11, item 2).

Whatever its last status said: a dead node whose will never came (its
connection cut when its certificate was revoked, say) does not stay online.
The interval is learned from the node's own telemetry stamps; the silence
counts only while the server was listening. The jobs run as the server's
timer loop runs them (`default_jobs`), at chosen instants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from fleet_server.alerting import AlertNotice, load_policies
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node
from fleet_server.presence import Silence
from fleet_server.timers import TimerJob, default_jobs, run_jobs_once
from proto.codec import encode, topic_for
from proto.messages import Birth, Firmware, Status, Telemetry, WireModel
from tests.support.ingest import sqlite_engine

T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
SILENCE = Silence(intervals=3.0, default_s=300.0, min_s=60.0)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


def send(engine: Engine, *messages: WireModel, at: datetime) -> None:
    envelopes, rejections = decode_all([(topic_for(m), encode(m)) for m in messages])
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120.0)
        store_batch(session=session, envelopes=envelopes, now=at, policies=policies)
        session.commit()


def connect(node: str, at: datetime, bd_seq: int = 1) -> list[WireModel]:
    return [
        Status(node_id=node, ts=at, state="online", bd_seq=bd_seq),
        Birth(
            node_id=node, ts=at, bd_seq=bd_seq, serial="SN-1", hardware="rpi4",
            firmware=Firmware(version="0.1.0"), capabilities=[], config_hash="0" * 64,
        ),
    ]  # fmt: skip


def telemetry(node: str, device_ts: datetime) -> Telemetry:
    return Telemetry(node_id=node, ts=device_ts, uptime_s=60.0)


def jobs(link_up: list[bool] | None = None) -> list[TimerJob]:
    return default_jobs(
        ack_timeout_s=120.0, offline_grace_s=15.0, silence=SILENCE,
        link_up=None if link_up is None else (lambda: link_up[-1]),
    )  # fmt: skip


def run(engine: Engine, job_list: Sequence[TimerJob], at: datetime) -> list[AlertNotice]:
    return run_jobs_once(engine=engine, jobs=job_list, now=at)


def node_row(engine: Engine, node_id: str) -> Node:
    with Session(engine) as session:
        node = session.get(Node, node_id)
    assert node is not None
    return node


def test_a_dead_node_whose_will_never_came_goes_offline_after_three_intervals(
    engine: Engine,
) -> None:
    node = "lhr-pillar-0101"
    timers = jobs()
    run(engine, timers, T0)  # the server is listening from T0
    send(engine, *connect(node, T0), at=T0)
    last = T0
    for i in range(1, 5):  # telemetry every 30 s by the node's clock
        last = T0 + timedelta(seconds=30 * i)
        send(engine, telemetry(node, last), at=last)
        run(engine, timers, last)
    assert node_row(engine, node).telemetry_interval_s == 30.0

    # Connection gone, no will: 89 s of silence is still within 3 × 30 s...
    assert run(engine, timers, last + timedelta(seconds=89)) == []
    assert node_row(engine, node).online
    # ...90 s is not: the outage is dated when the node was last heard.
    notices = run(engine, timers, last + timedelta(seconds=95))
    assert [(n.op, n.alert.type, n.alert.node_id) for n in notices] == [
        ("created", "node_offline", node)
    ]
    stored = node_row(engine, node)
    assert not stored.online
    assert stored.online_changed_at == last

    # Its next message brings it back and settles the outage.
    back = last + timedelta(minutes=10)
    send(engine, *connect(node, back, bd_seq=2), at=back)
    assert node_row(engine, node).online
    with Session(engine) as session:
        alert = session.exec(select(Alert).where(Alert.node_id == node)).one()
    assert alert.state == "resolved"


def test_the_interval_comes_from_the_nodes_own_stamps_not_a_bunched_backlog(
    engine: Engine,
) -> None:
    # Reports every 120 s (lahore-city's interval) that reach the server together
    # after a backlog: the interval is still 120 s, so 5 minutes' silence is not an outage.
    node = "lhr-pillar-0102"
    timers = jobs()
    run(engine, timers, T0)
    send(engine, *connect(node, T0), at=T0)
    arrived = T0 + timedelta(minutes=6)
    send(
        engine,
        *(telemetry(node, T0 + timedelta(seconds=120 * i)) for i in range(1, 4)),
        at=arrived,
    )
    assert node_row(engine, node).telemetry_interval_s == 120.0
    assert run(engine, timers, arrived + timedelta(minutes=5)) == []
    assert node_row(engine, node).online
    assert run(engine, timers, arrived + timedelta(minutes=7))  # past 3 × 120 s
    assert not node_row(engine, node).online


def test_a_node_whose_interval_is_unknown_gets_the_default_timeout(engine: Engine) -> None:
    node = "lhr-pillar-0103"
    timers = jobs()
    run(engine, timers, T0)
    send(engine, *connect(node, T0), at=T0)  # a birth, no telemetry yet
    assert run(engine, timers, T0 + timedelta(seconds=299)) == []
    assert node_row(engine, node).online
    assert run(engine, timers, T0 + timedelta(seconds=305))  # (the job looks every 5 s)
    assert not node_row(engine, node).online


def test_silence_counts_only_while_the_server_was_listening(engine: Engine) -> None:
    node = "lhr-pillar-0104"
    send(engine, *connect(node, T0), at=T0)
    # A server (re)started an hour later hears nothing yet: nobody is silent so far.
    link = [True]
    timers = jobs(link)
    restarted = T0 + timedelta(hours=1)
    assert run(engine, timers, restarted) == []
    assert run(engine, timers, restarted + timedelta(seconds=200)) == []
    assert node_row(engine, node).online
    # The broker link drops for ten minutes: still not the nodes' silence.
    link.append(False)
    assert run(engine, timers, restarted + timedelta(seconds=250)) == []
    link.append(True)
    relinked = restarted + timedelta(minutes=10)
    assert run(engine, timers, relinked) == []
    assert run(engine, timers, relinked + timedelta(seconds=299)) == []
    assert node_row(engine, node).online
    # Listening for the whole default timeout and nothing came: offline.
    assert run(engine, timers, relinked + timedelta(seconds=305))
    assert not node_row(engine, node).online


def test_a_silent_city_is_taken_offline_in_chunks(engine: Engine) -> None:
    timers = jobs()
    run(engine, timers, T0)
    send(engine, *(m for i in range(450) for m in connect(f"lhr-{i:04d}", T0)), at=T0)
    later = T0 + timedelta(seconds=301)
    chunks = [run(engine, timers, later) for _ in range(4)]
    assert [len(c) for c in chunks] == [200, 200, 50, 0]
    with Session(engine) as session:
        assert session.exec(select(func.count()).where(col(Node.online))).one() == 0
