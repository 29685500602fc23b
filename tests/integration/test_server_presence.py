"""Presence survives a reset `bd_seq` (issue 11, item 2), on SQLite and PostgreSQL.

A node's `bd_seq` lives in its outbox; a reflashed or replaced node starts
again at 1. Sparkplug B's rules are the reference: a birth (or an online
status) from a live connection wins and sets the current session, a
last-will counts only when it is the current session's, and anything else
the node sends proves it is connected. Messages go through the real codec
and `store_batch`; the timer jobs run at chosen instants.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Literal

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import ensure_default_policies, load_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, AlertTransition, Node
from fleet_server.schema import migrate
from fleet_server.timers import run_timers_once
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PlateEvent, Status, Telemetry, WireModel

T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
GRACE_S = 15.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    yield eng
    eng.dispose()


def send(engine: Engine, *messages: WireModel, at: datetime) -> None:
    """What the ingest worker does with one batch received at `at`, minus MQTT."""
    envelopes, rejections = decode_all([(topic_for(m), encode(m)) for m in messages])
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120.0)
        store_batch(session=session, envelopes=envelopes, now=at, policies=policies)
        session.commit()


def tick(engine: Engine, at: datetime) -> None:
    run_timers_once(engine=engine, now=at, ack_timeout_s=120.0, offline_grace_s=GRACE_S)


def birth(node: str, bd_seq: int, at: datetime) -> Birth:
    return Birth(
        node_id=node, ts=at, bd_seq=bd_seq, serial="SN-1", hardware="rpi4",
        firmware=Firmware(version="0.1.0"), capabilities=[], config_hash="0" * 64,
        district="gulberg", site_id="main-blvd",
    )  # fmt: skip


def status(node: str, state: Literal["online", "offline"], bd_seq: int, at: datetime) -> Status:
    return Status(node_id=node, ts=at, state=state, bd_seq=bd_seq)


def telemetry(node: str, at: datetime) -> Telemetry:
    return Telemetry(node_id=node, ts=at, uptime_s=60.0)


def node_row(engine: Engine, node_id: str) -> Node:
    with Session(engine) as session:
        node = session.get(Node, node_id)
    assert node is not None
    return node


def outages(engine: Engine, node_id: str) -> list[Alert]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Alert)
                .where(Alert.node_id == node_id, Alert.type == "node_offline")
                .order_by(col(Alert.received_at))
            ).all()
        )


def go_offline_with_an_outage(engine: Engine, node: str, bd_seq: int) -> datetime:
    """The node's session `bd_seq` ends (its will) and the grace period passes."""
    send(engine, status(node, "online", bd_seq, T0), birth(node, bd_seq, T0), at=T0)
    send(engine, status(node, "offline", bd_seq, T0), at=T0 + timedelta(seconds=30))
    settled = T0 + timedelta(seconds=30 + GRACE_S + 1)
    tick(engine, settled)
    assert not node_row(engine, node).online
    assert [a.state for a in outages(engine, node)] == ["new"]
    return settled


def test_a_pillar_reconnecting_with_a_lower_bd_seq_comes_online_and_its_outage_settles(
    engine: Engine,
) -> None:
    # The server saw session 99; the pillar (its counter reset) reconnects as session 3
    # and keeps sending telemetry.
    node = "lhr-pillar-0001"
    settled = go_offline_with_an_outage(engine, node, 99)
    back = settled + timedelta(minutes=5)
    send(engine, status(node, "online", 3, back), birth(node, 3, back), at=back)
    for i in range(1, 4):
        at = back + timedelta(seconds=30 * i)
        send(engine, telemetry(node, at), at=at)
        tick(engine, at)

    stored = node_row(engine, node)
    assert stored.online
    assert stored.bd_seq == 3
    assert stored.online_changed_at == back
    (outage,) = outages(engine, node)
    assert outage.state == "resolved"
    with Session(engine) as session:
        actors = session.exec(
            select(AlertTransition.actor).where(AlertTransition.alert_id == outage.id)
        ).all()
    assert "system:node_online" in actors

    # The old session's will, still retained at the broker, changes nothing now...
    send(engine, status(node, "offline", 99, back), at=back + timedelta(minutes=2))
    tick(engine, back + timedelta(minutes=3))
    assert node_row(engine, node).online
    # ...and the current session's will does.
    send(engine, status(node, "offline", 3, back), at=back + timedelta(minutes=4))
    tick(engine, back + timedelta(minutes=5))
    assert not node_row(engine, node).online
    assert [a.state for a in outages(engine, node)] == ["resolved", "new"]


def test_telemetry_alone_proves_an_offline_node_is_connected(engine: Engine) -> None:
    # Its status and birth were lost (or came from a session the server did not
    # expect): the node's telemetry still reaches the server, so it is there.
    node = "lhr-pillar-0002"
    settled = go_offline_with_an_outage(engine, node, 99)
    at = settled + timedelta(minutes=1)
    send(engine, telemetry(node, at), at=at)

    stored = node_row(engine, node)
    assert stored.online
    assert stored.online_changed_at == at
    assert [a.state for a in outages(engine, node)] == ["resolved"]


def test_an_event_from_a_pending_offline_node_cancels_its_outage(engine: Engine) -> None:
    node = "cam-0003"
    send(engine, birth(node, 4, T0), at=T0)
    send(engine, status(node, "offline", 4, T0), at=T0 + timedelta(seconds=1))
    plate = PlateEvent(
        node_id=node, ts=T0, event_id=new_event_id(), seq=1, camera_id="cam-1",
        track_id="t1", plate="LEA1234", confidence=0.9, frames=3,
    )  # fmt: skip
    send(engine, plate, at=T0 + timedelta(seconds=5))
    tick(engine, T0 + timedelta(seconds=60))

    stored = node_row(engine, node)
    assert stored.online
    assert stored.offline_pending_since is None
    assert outages(engine, node) == []


def test_a_reflashed_node_that_dies_goes_offline(engine: Engine) -> None:
    # Session 7 of the old SD card; reflashed, the node starts again at 1 and its
    # will (bd_seq 1) is the one that arrives when it dies.
    node = "lhr-pillar-0004"
    send(engine, status(node, "online", 7, T0), birth(node, 7, T0), at=T0)
    flashed = T0 + timedelta(hours=2)
    send(engine, status(node, "online", 1, flashed), birth(node, 1, flashed), at=flashed)
    assert node_row(engine, node).bd_seq == 1
    died = flashed + timedelta(minutes=1)
    send(engine, status(node, "offline", 1, died), at=died)
    tick(engine, died + timedelta(minutes=10))

    stored = node_row(engine, node)
    assert not stored.online
    assert stored.online_changed_at == died
    assert [a.state for a in outages(engine, node)] == ["new"]
