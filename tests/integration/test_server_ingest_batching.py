"""Batched ingest keeps its promises with the cheaper paths of `bench ingest`.

The worker loads open alerts only for nodes whose events can open or join one,
loads the batch's power states in one query, and encodes acks from one
validated template. None of that may change what is stored, what is acked,
or that a redelivered batch is stored once and acked again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from fleet_server.alerting import AlertNotice
from fleet_server.ingest import IngestWorker
from fleet_server.ingest.acks import publish_acks
from fleet_server.models import Alert, Event, PowerState
from proto.codec import encode
from proto.ids import new_event_id
from proto.messages import Ack, EventBase, PanicEvent, PowerEvent, TamperEvent
from tests.support.ingest import T0, RecordedAcks, plate_read, sqlite_engine, wire


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


def _worker(engine: Engine) -> tuple[IngestWorker, RecordedAcks, list[AlertNotice]]:
    seen: list[AlertNotice] = []
    sent = RecordedAcks()

    def notify(notices: Sequence[AlertNotice]) -> None:
        seen.extend(notices)

    worker = IngestWorker(engine=engine, publisher=sent, notify=notify, ack_timeout_s=120.0)
    return worker, sent, seen


def _power(node: str, seq: int, step: int) -> EventBase:
    return PowerEvent(
        node_id=node, ts=T0 + timedelta(seconds=seq), event_id=new_event_id(), seq=seq,
        power="policy_step", policy_step=step, battery_soc=0.5,
    )  # fmt: skip


def _tamper(node: str, seq: int) -> EventBase:
    return TamperEvent(
        node_id=node, ts=T0, event_id=new_event_id(), seq=seq, tamper="camera_blocked"
    )


def _panic(node: str, seq: int) -> EventBase:
    return PanicEvent(node_id=node, ts=T0, event_id=new_event_id(), seq=seq)


def test_fast_acks_are_byte_for_byte_what_the_ack_model_encodes() -> None:
    acks = {"cam-0001": [new_event_id() for _ in range(3)], "cam-0002": []}
    acks["cam-0002"] = [new_event_id() for _ in range(1_201)]
    sent = RecordedAcks()
    publish_acks(sent, acks, now=T0)
    expected = [
        (f"nb/v1/{node}/ack", encode(Ack(node_id=node, ts=T0, event_ids=ids[i : i + 500])))
        for node, ids in acks.items()
        for i in range(0, len(ids), 500)
    ]
    assert sent.messages == expected


def test_a_mixed_batch_is_stored_and_acked_once_and_a_redelivery_only_acked_again(
    engine: Engine,
) -> None:
    worker, sent, _ = _worker(engine)
    batch = [
        wire(e)
        for n in range(20)
        for e in (
            plate_read(f"cam-{n:04d}", 1),
            _power(f"cam-{n:04d}", 2, 1),
            plate_read(f"cam-{n:04d}", 3),
        )
    ]
    ids = [json.loads(p)["event_id"] for _, p in batch]

    worker.process(batch)
    assert sorted(sent.acked()) == sorted(ids)
    sent.messages.clear()
    worker.process(batch)  # the broker redelivers the same messages

    assert sorted(sent.acked()) == sorted(ids)
    assert (worker.stats.inserted, worker.stats.duplicates) == (60, 60)
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Event)).one() == 60
        states = session.exec(select(PowerState)).all()
    assert len(states) == 20
    assert {s.policy_step for s in states} == {1}


def test_two_power_events_of_a_new_node_in_one_batch_make_one_state_row(engine: Engine) -> None:
    worker, sent, _ = _worker(engine)
    worker.process([wire(_power("cam-0001", 1, 1)), wire(_power("cam-0001", 2, 2))])
    worker.process([wire(_power("cam-0001", 3, 3)), wire(plate_read("cam-0002", 1))])

    assert worker.stats.failed == 0
    assert len(sent.acked()) == 4
    with Session(engine) as session:
        (state,) = session.exec(select(PowerState)).all()
    assert (state.node_id, state.policy_step, state.max_policy_step) == ("cam-0001", 3, 3)


def test_tamper_joins_the_open_tamper_alert_and_a_panic_beside_it_opens_its_own(
    engine: Engine,
) -> None:
    worker, _, notices = _worker(engine)
    worker.process([wire(_tamper("cam-0001", 1)), wire(plate_read("cam-0002", 1))])
    worker.process(
        [wire(plate_read("cam-0001", 2)), wire(_tamper("cam-0001", 3)), wire(_panic("cam-0001", 4))]
    )

    assert [n.op for n in notices] == ["created", "joined", "created"]
    with Session(engine) as session:
        alerts = {a.type: a for a in session.exec(select(Alert)).all()}
    assert set(alerts) == {"tamper", "panic"}
    assert alerts["tamper"].press_count == 2
    assert alerts["panic"].press_count == 1
