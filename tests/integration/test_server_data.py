"""The fleet server's data layer, on SQLite and (when reachable) PostgreSQL.

No HTTP and no MQTT here: messages are decoded with the real codec and
stored with the same functions the ingest worker calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from fleet_server.alerting import (
    IllegalTransition,
    ensure_default_policies,
    load_policies,
    set_policy,
    transition_alert,
)
from fleet_server.auth import create_user
from fleet_server.crud import add_rejections, rejection_report
from fleet_server.db import make_engine
from fleet_server.ingest import BatchOutcome, decode_all, store_batch
from fleet_server.models import (
    CATCH_ALL_QUEUE,
    Alert,
    AlertEscalation,
    AlertState,
    AlertTransition,
    Event,
    Node,
    Role,
    SequenceGap,
    UserCreate,
)
from fleet_server.response_times import response_times
from fleet_server.schema import migrate
from fleet_server.timers import run_timers_once
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PanicEvent, Status

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
ACK_TIMEOUT_S = 120.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    with Session(eng) as session:
        ensure_default_policies(session=session)
    yield eng
    eng.dispose()


def panic(node: str, seq: int, *, test: bool = False, event_id: str | None = None) -> PanicEvent:
    return PanicEvent(
        node_id=node,
        ts=T0 - timedelta(milliseconds=150),
        event_id=event_id or new_event_id(),
        seq=seq,
        test=test,
    )


def wire(*messages: PanicEvent | Status | Birth) -> list[tuple[str, bytes]]:
    return [(topic_for(m), encode(m)) for m in messages]


def ingest(engine: Engine, raw: list[tuple[str, bytes]], *, now: datetime = T0) -> BatchOutcome:
    """What the ingest worker does with one batch, minus MQTT."""
    envelopes, rejections = decode_all(raw)
    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=ACK_TIMEOUT_S)
        out = store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
        add_rejections(session=session, counts=rejections, now=now)
        session.commit()
    return out


def alerts(engine: Engine, node: str) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert).where(Alert.node_id == node)).all())


def birth(node: str, bd_seq: int, district: str = "gulberg") -> Birth:
    return Birth(
        node_id=node,
        ts=T0,
        bd_seq=bd_seq,
        serial="SN-1",
        hardware="rpi4",
        firmware=Firmware(version="0.1.0"),
        capabilities=[],
        config_hash="0" * 64,
        district=district,
        site_id="main-blvd",
    )


def test_a_redelivered_press_is_stored_once_and_acked_every_time(engine: Engine) -> None:
    press = panic("lhr-0001", 1)
    first = ingest(engine, wire(press, press))  # duplicate inside one batch
    again = ingest(engine, wire(press))  # and redelivered in a later batch

    assert first.acks == {"lhr-0001": [press.event_id]}
    assert again.acks == {"lhr-0001": [press.event_id]}
    assert (first.inserted, first.duplicates, again.inserted, again.duplicates) == (1, 1, 0, 1)
    assert [n.op for n in again.notices] == []
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 1
    assert len(alerts(engine, "lhr-0001")) == 1


def test_presses_on_a_node_with_an_open_panic_alert_join_it(engine: Engine) -> None:
    first, second, third = panic("lhr-0002", 1), panic("lhr-0002", 2), panic("lhr-0002", 3)
    out1 = ingest(engine, wire(first))
    out2 = ingest(engine, wire(second, third))

    (alert,) = alerts(engine, "lhr-0002")
    assert alert.press_count == 3
    assert alert.first_event_id == first.event_id
    assert alert.last_event_id == third.event_id
    assert alert.severity == "P1"
    assert [(n.op, n.event_id) for n in out1.notices] == [("created", first.event_id)]
    assert [(n.op, n.event_id) for n in out2.notices] == [
        ("joined", second.event_id),
        ("joined", third.event_id),
    ]
    created = out1.notices[0]
    assert created.command is not None
    assert created.command.alert_id == alert.id


def test_a_press_after_the_alert_is_resolved_opens_a_new_one(engine: Engine) -> None:
    ingest(engine, wire(panic("lhr-0003", 1)))
    (alert,) = alerts(engine, "lhr-0003")
    with Session(engine) as session:
        transition_alert(
            session=session, alert_id=alert.id, to="resolved", actor="user:op",
            ack_timeout_s=ACK_TIMEOUT_S,
        )  # fmt: skip
    ingest(engine, wire(panic("lhr-0003", 2)))
    assert sorted(a.state for a in alerts(engine, "lhr-0003")) == ["new", "resolved"]


def test_test_presses_make_test_alerts_that_never_escalate(engine: Engine) -> None:
    ingest(engine, wire(panic("lhr-0004", 1, test=True)))
    (alert,) = alerts(engine, "lhr-0004")
    assert alert.state == AlertState.TEST
    assert alert.next_escalation_at is None
    notices = run_timers_once(
        engine=engine, now=T0 + timedelta(hours=1), ack_timeout_s=ACK_TIMEOUT_S,
        offline_grace_s=15,
    )  # fmt: skip
    assert notices == []


def test_legal_transitions_are_recorded_with_actor_and_illegal_ones_refused(
    engine: Engine,
) -> None:
    ingest(engine, wire(panic("lhr-0005", 1)))
    (alert,) = alerts(engine, "lhr-0005")
    with Session(engine) as session:
        for step, at in (("acknowledged", 5), ("dispatched", 20), ("on_scene", 300)):
            transition_alert(
                session=session, alert_id=alert.id, to=step, actor="user:ayesha",
                note=f"{step} note", ack_timeout_s=ACK_TIMEOUT_S, now=T0 + timedelta(seconds=at),
            )  # fmt: skip
        with pytest.raises(IllegalTransition, match="allowed: false_alarm, resolved"):
            transition_alert(
                session=session, alert_id=alert.id, to="new", actor="user:ayesha",
                ack_timeout_s=ACK_TIMEOUT_S,
            )  # fmt: skip
    with Session(engine) as session:
        rows = session.exec(
            select(AlertTransition)
            .where(AlertTransition.alert_id == alert.id)
            .order_by(col(AlertTransition.id))
        ).all()
        stored = session.get(Alert, alert.id)
    assert [(r.from_state, r.to_state, r.actor) for r in rows] == [
        (None, "new", "node:lhr-0005"),
        ("new", "acknowledged", "user:ayesha"),
        ("acknowledged", "dispatched", "user:ayesha"),
        ("dispatched", "on_scene", "user:ayesha"),
    ]
    assert stored is not None
    assert stored.state == "on_scene"
    assert stored.acknowledged_at == T0 + timedelta(seconds=5)
    assert stored.next_escalation_at is None


def test_escalation_due_times_survive_a_restart(db_url: str, engine: Engine) -> None:
    ingest(engine, wire(panic("lhr-0006", 1)))
    (alert,) = alerts(engine, "lhr-0006")
    assert (alert.escalation_level, alert.queue) == (0, "zone_operator")
    assert alert.next_escalation_at == T0 + timedelta(seconds=30)
    engine.dispose()

    restarted = make_engine(db_url)  # a new process on the same database
    try:
        early = run_timers_once(
            engine=restarted, now=T0 + timedelta(seconds=29), ack_timeout_s=ACK_TIMEOUT_S,
            offline_grace_s=15,
        )  # fmt: skip
        assert early == []
        due = run_timers_once(
            engine=restarted, now=T0 + timedelta(seconds=31), ack_timeout_s=ACK_TIMEOUT_S,
            offline_grace_s=15,
        )  # fmt: skip
        assert [(n.op, n.alert.escalation_level, n.alert.queue) for n in due] == [
            ("escalated", 1, "supervisor")
        ]
        (after,) = alerts(restarted, "lhr-0006")
        assert after.next_escalation_at == T0 + timedelta(seconds=90)
    finally:
        restarted.dispose()


def test_an_acknowledgement_not_followed_by_dispatch_re_escalates(engine: Engine) -> None:
    ingest(engine, wire(panic("lhr-0007", 1)))
    (alert,) = alerts(engine, "lhr-0007")
    with Session(engine) as session:
        transition_alert(
            session=session, alert_id=alert.id, to="acknowledged", actor="user:op",
            ack_timeout_s=ACK_TIMEOUT_S, now=T0 + timedelta(seconds=10),
        )  # fmt: skip
    # Acknowledging stopped the ladder: +30 s passes quietly.
    quiet = run_timers_once(
        engine=engine, now=T0 + timedelta(seconds=60), ack_timeout_s=ACK_TIMEOUT_S,
        offline_grace_s=15,
    )  # fmt: skip
    assert quiet == []
    late = run_timers_once(
        engine=engine, now=T0 + timedelta(seconds=131), ack_timeout_s=ACK_TIMEOUT_S,
        offline_grace_s=15,
    )  # fmt: skip
    assert [(n.op, n.alert.escalation_level) for n in late] == [("escalated", 1)]
    with Session(engine) as session:
        reasons = session.exec(
            select(AlertEscalation.reason)
            .where(AlertEscalation.alert_id == alert.id)
            .order_by(col(AlertEscalation.id))
        ).all()
    assert reasons == ["created", "ack_not_followed_up"]


def test_an_alert_with_no_recipient_lands_in_the_catch_all_queue(engine: Engine) -> None:
    with Session(engine) as session:
        # Level 0 is a role nobody holds; level 1 names no recipient at all.
        set_policy(
            session=session, name="panic", alert_type="panic",
            levels=[(0, Role.OPERATOR), (30, None)],
        )  # fmt: skip
        session.commit()
    ingest(engine, wire(panic("lhr-0008", 1)))
    (alert,) = alerts(engine, "lhr-0008")
    assert alert.queue == CATCH_ALL_QUEUE

    with Session(engine) as session:
        create_user(
            session=session,
            user_in=UserCreate(username="op1", role=Role.OPERATOR, password="operator-pw"),
        )
    ingest(engine, wire(panic("lhr-0009", 1)))
    (staffed,) = alerts(engine, "lhr-0009")
    assert staffed.queue == "operator"
    run_timers_once(
        engine=engine, now=T0 + timedelta(seconds=31), ack_timeout_s=ACK_TIMEOUT_S,
        offline_grace_s=15,
    )  # fmt: skip
    (escalated,) = alerts(engine, "lhr-0009")
    assert (escalated.escalation_level, escalated.queue) == (1, CATCH_ALL_QUEUE)


def test_a_jump_in_seq_is_recorded_as_a_gap(engine: Engine) -> None:
    ingest(engine, wire(panic("lhr-0010", 1), panic("lhr-0010", 4)))
    ingest(engine, wire(panic("lhr-0010", 2)))  # a late resend is not a new gap
    with Session(engine) as session:
        gaps = session.exec(select(SequenceGap).where(SequenceGap.node_id == "lhr-0010")).all()
        node = session.get(Node, "lhr-0010")
    assert [(g.first_missing, g.last_missing) for g in gaps] == [(3, 3)]  # 2 came, late
    assert node is not None
    assert node.last_seq == 4


def _gaps(engine: Engine, node_id: str) -> list[tuple[int, int]]:
    with Session(engine) as session:
        rows = session.exec(select(SequenceGap).where(SequenceGap.node_id == node_id)).all()
        return sorted((g.first_missing, g.last_missing) for g in rows)


def test_late_events_split_shrink_and_close_a_recorded_gap(engine: Engine) -> None:
    """What is left of a gap is what never arrived (an MQTT hop lost or reordered the
    rest and the node's outbox re-sent it); a redelivery or an old seq never recorded
    missing changes nothing."""
    node = "lhr-0012"
    ingest(engine, wire(panic(node, 1), panic(node, 10)))
    assert _gaps(engine, node) == [(2, 9)]
    ingest(engine, wire(panic(node, 5)))
    assert _gaps(engine, node) == [(2, 4), (6, 9)]
    ingest(engine, wire(panic(node, 2), panic(node, 9)))
    assert _gaps(engine, node) == [(3, 4), (6, 8)]
    ingest(engine, wire(panic(node, 1)))  # a new event with a seq never recorded missing
    assert _gaps(engine, node) == [(3, 4), (6, 8)]
    ingest(engine, wire(*(panic(node, s) for s in (3, 4, 6, 7, 8))))
    assert _gaps(engine, node) == []
    with Session(engine) as session:
        row = session.get(Node, node)
    assert row is not None
    assert row.last_seq == 10


def test_a_reconnect_within_the_grace_period_is_not_an_outage(engine: Engine) -> None:
    node = "lhr-0011"
    ingest(engine, wire(birth(node, 1)))
    ingest(engine, wire(Status(node_id=node, ts=T0, state="offline", bd_seq=1)))
    ingest(engine, wire(Status(node_id=node, ts=T0, state="online", bd_seq=2)),
           now=T0 + timedelta(seconds=5))  # fmt: skip
    # The old session's last-will arriving late must not count either.
    ingest(engine, wire(Status(node_id=node, ts=T0, state="offline", bd_seq=1)),
           now=T0 + timedelta(seconds=6))  # fmt: skip
    run_timers_once(engine=engine, now=T0 + timedelta(seconds=60),
                    ack_timeout_s=ACK_TIMEOUT_S, offline_grace_s=15)  # fmt: skip
    with Session(engine) as session:
        stored = session.get(Node, node)
    assert stored is not None
    assert stored.online
    assert stored.district == "gulberg"
    assert alerts(engine, node) == []


def test_an_outage_longer_than_the_grace_period_raises_and_clears_an_alert(
    engine: Engine,
) -> None:
    node = "lhr-0012"
    ingest(engine, wire(birth(node, 1)))
    ingest(engine, wire(Status(node_id=node, ts=T0, state="offline", bd_seq=1)))
    notices = run_timers_once(engine=engine, now=T0 + timedelta(seconds=16),
                              ack_timeout_s=ACK_TIMEOUT_S, offline_grace_s=15)  # fmt: skip
    assert [(n.op, n.alert.type, n.alert.severity) for n in notices] == [
        ("created", "node_offline", "P3")
    ]
    with Session(engine) as session:
        stored = session.get(Node, node)
        assert stored is not None
        assert not stored.online
    back = ingest(engine, wire(birth(node, 2)), now=T0 + timedelta(seconds=40))
    assert [(n.op, n.alert.state) for n in back.notices] == [("transition", "resolved")]


def test_a_city_wide_outage_is_settled_in_short_chunks_one_alert_per_node(
    engine: Engine,
) -> None:
    # 450 nodes drop together (a district's power and LTE go): the timer settles
    # them 200 at a time, so no transaction holds the database for the whole city.
    ingest(engine, [m for i in range(450) for m in wire(birth(f"lhr-{i:04d}", 1))])
    offline = [Status(node_id=f"lhr-{i:04d}", ts=T0, state="offline", bd_seq=1) for i in range(450)]
    ingest(engine, wire(*offline))
    later = T0 + timedelta(seconds=16)

    chunks = [
        run_timers_once(engine=engine, now=later, ack_timeout_s=ACK_TIMEOUT_S, offline_grace_s=15)
        for _ in range(4)
    ]

    assert [len(c) for c in chunks] == [200, 200, 50, 0]
    created = [n.alert for c in chunks for n in c]
    assert {a.type for a in created} == {"node_offline"}
    assert len({a.node_id for a in created}) == 450
    with Session(engine) as session:
        assert session.exec(select(func.count()).where(col(Node.online))).one() == 0
        outage_ids = [a.id for a in created]
        history = session.exec(
            select(func.count()).where(col(AlertTransition.alert_id).in_(outage_ids))
        ).one()
    assert history == 450  # every alert's first transition, inserted in bulk


def test_refused_messages_are_counted_by_reason_and_node(engine: Engine) -> None:
    good = panic("lhr-0013", 1)
    spoofed = panic("lhr-9999", 1)
    raw = [
        ("nb/v1/lhr-0013/event/panic", b"{not json"),
        ("nb/v1/lhr-0013/event/panic", encode(spoofed)),
        ("nb/v1/lhr-0013/event/panic", b"{not json either"),
        *wire(good),
    ]
    out = ingest(engine, raw)
    assert out.acks == {"lhr-0013": [good.event_id]}
    with Session(engine) as session:
        report = rejection_report(session=session)
    assert report.by_reason == {"malformed_json": 2, "node_id_mismatch": 1}
    assert report.by_node == {"lhr-0013": 3}


def test_response_times_are_percentiles_per_district(engine: Engine) -> None:
    ingest(engine, wire(birth("lhr-0014", 1, district="gulberg")))
    ingest(engine, wire(birth("khi-0001", 1, district="saddar")))
    for node, seq, ack_s in (("lhr-0014", 1, 10), ("khi-0001", 1, 40)):
        ingest(engine, wire(panic(node, seq)))
        (alert,) = alerts(engine, node)
        with Session(engine) as session:
            transition_alert(
                session=session, alert_id=alert.id, to="acknowledged", actor="user:op",
                ack_timeout_s=ACK_TIMEOUT_S, now=T0 + timedelta(seconds=ack_s),
            )  # fmt: skip
    with Session(engine) as session:
        report = response_times(session=session)
    by_district = {d.district: d for d in report.data}
    assert by_district["gulberg"].stages["received_to_acknowledged"].p99_s == 10
    assert by_district["saddar"].stages["received_to_acknowledged"].p50_s == 40
    assert by_district["gulberg"].stages["press_to_received"].p50_s == pytest.approx(0.15)
    assert by_district["gulberg"].stages["dispatched_to_on_scene"].count == 0
