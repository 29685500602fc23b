"""Acks wait while the worker is behind, never for a panic press, and none is lost.

`fleet_server.ingest.acks.AckCoalescer` merges acks of non-panic events per node
while more messages are queued; these stories pin its rules with a fake
clock, then check the ingest worker keeps them with a real database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from fleet_server.alerting import AlertNotice
from fleet_server.ingest import IngestWorker
from fleet_server.ingest.acks import ACK_MAX_IDS, AckCoalescer
from proto.ids import new_event_id
from proto.messages import PanicEvent
from tests.support.ingest import T0, RecordedAcks, plate_read, sqlite_engine, wire


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _ids(n: int) -> list[str]:
    return [new_event_id() for _ in range(n)]


def test_an_idle_server_acks_each_batch_at_once() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=1.0)
    a, b = _ids(2), _ids(1)
    assert acks.add({"cam-1": a, "cam-2": b}, urgent=(), backlog=0, now=T0) == 2
    assert sent.by_node() == {"cam-1": [a], "cam-2": [b]}
    assert acks.held == 0


def test_behind_a_backlog_acks_are_merged_per_node_until_the_queue_runs_dry() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=1.0, monotonic=_Clock())
    first, second, other = _ids(2), _ids(3), _ids(1)

    assert acks.add({"cam-1": first}, urgent=(), backlog=40, now=T0) == 0
    assert acks.add({"cam-1": second, "cam-2": other}, urgent=(), backlog=7, now=T0) == 0
    assert sent.messages == []
    assert acks.held == 6

    assert acks.add({}, urgent=(), backlog=0, now=T0) == 2
    assert sent.by_node() == {"cam-1": [first + second], "cam-2": [other]}
    assert acks.held == 0


def test_a_panic_press_is_acked_at_once_with_what_was_held_for_its_node() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=1.0, monotonic=_Clock())
    plate, press, elsewhere = _ids(1), _ids(1), _ids(1)
    acks.add({"pillar-7": plate, "cam-2": elsewhere}, urgent=(), backlog=10, now=T0)

    acks.add({"pillar-7": press}, urgent={"pillar-7"}, backlog=10, now=T0)

    assert sent.by_node() == {"pillar-7": [plate + press]}
    assert acks.held == 1  # cam-2's plate read still waits for the backlog


def test_nothing_is_held_longer_than_the_hold_time_even_under_a_steady_backlog() -> None:
    sent = RecordedAcks()
    clock = _Clock()
    acks = AckCoalescer(sent, hold_s=1.0, monotonic=clock)
    first, later = _ids(1), _ids(1)
    acks.add({"cam-1": first}, urgent=(), backlog=5, now=T0)
    clock.t += 0.99
    acks.add({"cam-2": _ids(1)}, urgent=(), backlog=5, now=T0)
    assert sent.messages == []

    clock.t += 0.02
    acks.add({"cam-1": later}, urgent=(), backlog=5, now=T0)

    assert sent.by_node()["cam-1"] == [first + later]
    assert acks.held == 0
    # The hold time starts again with the next ack held, not at the last flush.
    clock.t += 5.0
    acks.add({"cam-3": _ids(1)}, urgent=(), backlog=5, now=T0)
    assert acks.held == 1


def test_a_node_with_a_full_ack_waiting_gets_it_without_waiting_for_the_rest() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=1.0, monotonic=_Clock())
    many = _ids(ACK_MAX_IDS)
    acks.add({"cam-1": many[:300], "cam-2": _ids(1)}, urgent=(), backlog=5, now=T0)
    acks.add({"cam-1": many[300:]}, urgent=(), backlog=5, now=T0)

    assert sent.by_node() == {"cam-1": [many]}
    assert acks.held == 1


def test_a_redelivered_event_held_twice_is_acked_once() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=1.0, monotonic=_Clock())
    ids = _ids(2)
    acks.add({"cam-1": ids}, urgent=(), backlog=5, now=T0)
    acks.add({"cam-1": [ids[1]]}, urgent=(), backlog=5, now=T0)
    acks.flush(now=T0)
    assert sent.by_node() == {"cam-1": [ids]}


def test_a_zero_hold_time_turns_coalescing_off_and_a_negative_one_is_refused() -> None:
    sent = RecordedAcks()
    acks = AckCoalescer(sent, hold_s=0.0)
    acks.add({"cam-1": _ids(1)}, urgent=(), backlog=99, now=T0)
    assert len(sent.messages) == 1
    with pytest.raises(ValueError, match="hold_s"):
        AckCoalescer(sent, hold_s=-0.1)


# ------------------------------------------------------------ in the worker


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


def _worker(
    engine: Engine, *, batch_max: int = 500, ack_hold_s: float = 1.0
) -> tuple[IngestWorker, RecordedAcks]:
    sent = RecordedAcks()

    def notify(notices: Sequence[AlertNotice]) -> None:
        pass

    worker = IngestWorker(
        engine=engine, publisher=sent, notify=notify, ack_timeout_s=120.0,
        batch_max=batch_max, ack_hold_s=ack_hold_s,
    )  # fmt: skip
    return worker, sent


def test_the_worker_holds_plate_acks_behind_a_backlog_but_acks_a_press_at_once(
    engine: Engine,
) -> None:
    worker, sent = _worker(engine)
    plates = [wire(plate_read(f"cam-{n:04d}", 1)) for n in range(5)]
    press = PanicEvent(node_id="pillar-0001", ts=T0, event_id=new_event_id(), seq=1)
    waiting = wire(plate_read("cam-0000", 2))
    worker.submit(*waiting)  # queued behind the batch: the worker has a backlog

    worker.process([*plates, wire(press)])

    assert sent.by_node() == {"pillar-0001": [[press.event_id]]}
    assert worker.stats.acks_held == 5

    queued = [m for m in worker._queue.get_batch(500) if m is not None]
    worker.process(queued)  # the backlog drains: everything goes

    by_node = sent.by_node()
    assert len(sent.messages) == 6  # one per node, cam-0000's two plate reads in one
    assert len(by_node["cam-0000"][0]) == 2
    assert worker.stats.acks_held == 0
    assert worker.stats.ack_messages == 6


def test_a_drained_backlog_is_acked_once_per_node_and_every_event_exactly_once(
    engine: Engine,
) -> None:
    # 150 events queued before the worker starts, taken 10 at a time: every batch
    # but the last has a backlog behind it (the hold time is long enough not to end).
    worker, sent = _worker(engine, batch_max=10, ack_hold_s=5.0)
    events = [wire(plate_read(f"cam-{n:04d}", s)) for s in range(1, 4) for n in range(50)]
    for topic, payload in events:
        worker.submit(topic, payload)
    worker.start()
    worker.stop(timeout=30)

    acked = sent.acked()
    assert sorted(acked) == sorted(json.loads(p)["event_id"] for _, p in events)
    assert len(acked) == len(set(acked))
    assert len(sent.messages) == 50
    assert worker.stats.acks_held == 0


@pytest.mark.timeout(30)  # the bug this guards against is a hang
def test_messages_arriving_while_the_server_stops_are_left_to_their_nodes(
    engine: Engine,
) -> None:
    worker, sent = _worker(engine)
    worker._queue = type(worker._queue)(10)  # a small queue: 50 more would block on it
    worker.start()
    worker.stop(timeout=30)

    for n in range(50):  # paho's thread, after stop began: must never block
        worker.submit(*wire(plate_read(f"cam-{n:04d}", 1)))

    assert worker.stats.refused_closing == 50
    assert sent.messages == []  # not stored, so not acked: the outboxes keep them
