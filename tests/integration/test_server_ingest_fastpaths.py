"""The ingest worker's fast paths keep the same results as the plain ones.

Policies are cached between batches and reloaded exactly when the stored
policy version moved (a committed change to a policy, a level or a user,
made by this process or another one); history
rows of alerts opened by ingest are inserted in one statement per table; the
MQTT hops run with Nagle's algorithm off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotice, PolicyCache, set_policy
from fleet_server.auth import create_user
from fleet_server.broker import ManagedBroker
from fleet_server.broker.config import BrokerConfig, Listener
from fleet_server.db import make_engine
from fleet_server.ingest import IngestWorker
from fleet_server.models import (
    CATCH_ALL_QUEUE,
    Alert,
    AlertEscalation,
    AlertTransition,
    Event,
    Role,
    UserCreate,
)
from fleet_server.mqtt import MqttLink
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PanicEvent
from tests.support.ingest import T0, RecordedAcks, sqlite_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


def _worker(engine: Engine) -> tuple[IngestWorker, list[AlertNotice]]:
    seen: list[AlertNotice] = []

    def notify(notices: Sequence[AlertNotice]) -> None:
        seen.extend(notices)

    worker = IngestWorker(
        engine=engine, publisher=RecordedAcks(), notify=notify, ack_timeout_s=120.0
    )
    return worker, seen


def _press(node: str, seq: int = 1) -> tuple[str, bytes]:
    event = PanicEvent(node_id=node, ts=T0, event_id=new_event_id(), seq=seq)
    return topic_for(event), encode(event)


def _alert(engine: Engine, node: str) -> Alert:
    with Session(engine) as session:
        return session.exec(select(Alert).where(Alert.node_id == node)).one()


def test_alerts_opened_in_one_batch_get_their_history_rows(engine: Engine) -> None:
    worker, notices = _worker(engine)
    worker.process([_press(f"lhr-{i:04d}") for i in range(50)])

    assert [n.op for n in notices] == ["created"] * 50
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 50
        alerts = {a.id: a for a in session.exec(select(Alert)).all()}
        transitions = session.exec(select(AlertTransition)).all()
        escalations = session.exec(select(AlertEscalation)).all()
    assert len(alerts) == 50
    assert sorted(t.alert_id for t in transitions) == sorted(alerts)
    assert {(t.from_state, t.to_state) for t in transitions} == {(None, "new")}
    assert all(t.actor == f"node:{alerts[t.alert_id].node_id}" for t in transitions)
    assert sorted(e.alert_id for e in escalations) == sorted(alerts)
    assert {(e.level, e.reason) for e in escalations} == {(0, "created")}
    assert all(e.queue == alerts[e.alert_id].queue for e in escalations)


def test_a_policy_change_committed_in_process_applies_to_the_next_batch(engine: Engine) -> None:
    worker, _ = _worker(engine)
    worker.process([_press("lhr-0001")])
    assert _alert(engine, "lhr-0001").queue == "zone_operator"  # the seeded ladder
    loads = worker.policies.loads

    worker.process([_press("lhr-0002")])
    assert worker.policies.loads == loads  # cached: nothing changed

    with Session(engine) as session:
        set_policy(session=session, name="panic", alert_type="panic", levels=[(0, "desk-7")])
        session.commit()
    worker.process([_press("lhr-0003")])
    assert _alert(engine, "lhr-0003").queue == "desk-7"

    with Session(engine) as session:
        set_policy(session=session, name="panic", alert_type="panic", levels=[(0, Role.OPERATOR)])
        session.commit()
    worker.process([_press("lhr-0004")])
    assert _alert(engine, "lhr-0004").queue == CATCH_ALL_QUEUE  # nobody holds the role yet
    with Session(engine) as session:
        create_user(
            session=session,
            user_in=UserCreate(username="op1", role=Role.OPERATOR, password="operator-pw"),
        )
    worker.process([_press("lhr-0005")])
    assert _alert(engine, "lhr-0005").queue == Role.OPERATOR


def test_a_rolled_back_change_does_not_force_a_reload(engine: Engine) -> None:
    cache = PolicyCache(ack_timeout_s=120.0)
    with Session(engine) as session:
        cache.get(session)
    with Session(engine) as session:
        set_policy(session=session, name="panic", alert_type="panic", levels=[(0, "x")])
        session.rollback()
    with Session(engine) as session:
        cache.get(session)
    assert cache.loads == 1


def test_a_change_committed_by_another_process_is_seen_at_the_next_batch(
    engine: Engine, tmp_path: Path
) -> None:
    cache = PolicyCache(ack_timeout_s=120.0)
    with Session(engine) as session:
        first = cache.get(session)
        assert cache.get(session) is first  # nothing changed: no reload
    # Another engine on the same file is what a second process (the CLI, a
    # second server) looks like: no in-process hook can see its commits.
    elsewhere = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        with Session(elsewhere) as session:
            set_policy(session=session, name="panic", alert_type="panic", levels=[(0, "desk-9")])
            session.commit()
    finally:
        elsewhere.dispose()
    with Session(engine) as session:
        reloaded = cache.get(session)
    assert reloaded is not first
    assert reloaded.by_type["panic"].levels[0].recipient == "desk-9"
    assert cache.loads == 2


def test_the_managed_broker_turns_nagle_off(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, listeners=(Listener(port=18830),))
    assert "set_tcp_nodelay true" in config.render().splitlines()


def test_the_server_link_turns_nagle_off(broker: ManagedBroker) -> None:
    link = MqttLink(
        url=broker.url,
        on_message=lambda _topic, _payload: None,
        client_id=f"nodelay-{time.monotonic_ns()}",
        filters=["nb/v1/nodelay-test/#"],
    )
    link.start()
    try:
        assert link.connected.wait(10)
        sock = link._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        link.stop()


def test_escalation_rows_from_ingest_drive_the_timer_loop(engine: Engine) -> None:
    from fleet_server.timers import run_timers_once

    worker, _ = _worker(engine)
    worker.process([_press("lhr-0100")])
    alert = _alert(engine, "lhr-0100")
    assert alert.next_escalation_at is not None
    run_timers_once(
        engine=engine,
        now=alert.next_escalation_at + timedelta(seconds=1),
        ack_timeout_s=120.0,
        offline_grace_s=15.0,
    )
    with Session(engine) as session:
        reasons = session.exec(
            select(AlertEscalation.reason)
            .where(AlertEscalation.alert_id == alert.id)
            .order_by(col(AlertEscalation.id))
        ).all()
    assert reasons == ["created", "timeout"]
