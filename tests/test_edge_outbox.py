"""The durable outbox: on disk before publish, gone only on the server's ack."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox
from proto.codec import decode
from proto.messages import EventBase, NodeFaultEvent, PanicEvent

NODE = "lhr-test-0001"
TS = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def panic(event_id: str, seq: int) -> EventBase:
    return PanicEvent(node_id=NODE, ts=TS, event_id=event_id, seq=seq)


def fault(event_id: str, seq: int) -> EventBase:
    return NodeFaultEvent(
        node_id=NODE, ts=TS, event_id=event_id, seq=seq, component="camera", code="lost"
    )


def test_an_event_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    stored = box.append(panic)
    # A second, independent connection sees the committed row: it is not
    # sitting in this process's memory waiting to be flushed.
    other = sqlite3.connect(str(tmp_path / "o.db"))
    rows = other.execute("SELECT event_id, payload FROM events").fetchall()
    other.close()
    assert rows == [(stored.event_id, stored.payload)]
    decoded = decode(stored.topic, stored.payload)
    assert isinstance(decoded, PanicEvent)
    assert decoded.event_id == stored.event_id
    assert decoded.seq == 1
    box.close()


def test_wal_and_full_sync_are_in_force(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    box.close()


def test_events_leave_only_on_ack_and_unknown_ids_are_ignored(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    a, b = box.append(panic), box.append(fault)
    box.mark_published([a.event_id, b.event_id], at=1.0)
    assert box.depth == 2  # a publish (or a PUBACK) removes nothing
    assert box.ack(["01HZZZZZZZZZZZZZZZZZZZZZZZ", a.event_id]) == [a.event_id]
    assert [e.event_id for e in box.pending()] == [b.event_id]
    assert box.ack([a.event_id]) == []  # a duplicate ack is harmless
    assert box.depth == 1
    box.close()


def test_resend_is_in_seq_order_and_only_when_due(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    events = [box.append(panic if i % 2 else fault) for i in range(5)]
    assert [e.seq for e in box.pending()] == [1, 2, 3, 4, 5]
    box.mark_published([e.event_id for e in events], at=100.0)
    assert box.due(now=105.0, resend_after_s=10.0) == []
    assert [e.seq for e in box.due(now=110.0, resend_after_s=10.0)] == [1, 2, 3, 4, 5]
    box.forget_published()
    assert len(box.due(now=100.0, resend_after_s=10.0)) == 5
    box.close()


def test_full_outbox_evicts_oldest_non_panic_and_never_a_panic(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_events=10)
    first_panic = box.append(panic)
    faults = [box.append(fault) for _ in range(9)]
    assert box.depth == 10
    box.append(fault)
    remaining = {e.event_id for e in box.pending()}
    assert first_panic.event_id in remaining
    assert faults[0].event_id not in remaining
    assert box.evicted == 1
    assert box.depth == 10


def test_a_press_into_an_outbox_full_of_presses_is_still_written(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_events=10)
    presses = [box.append(panic) for _ in range(12)]
    assert box.depth == 12
    assert {e.event_id for e in box.pending()} == {p.event_id for p in presses}
    assert box.evicted == 0
    box.close()


def test_events_and_counters_survive_reopen_and_seq_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    a = box.append(panic)
    b = box.append(panic)
    box.ack([b.event_id])  # the highest seq is gone from the table...
    assert box.next_bd_seq() == 1
    assert box.next_bd_seq() == 2
    box.close()

    again = Outbox(path)
    assert [e.event_id for e in again.pending()] == [a.event_id]
    assert again.last_seq == 2
    c = again.append(panic)
    assert c.seq == 3  # ...but its seq is never issued again
    assert again.bd_seq == 2
    assert again.next_bd_seq() == 3
    again.close()


def test_event_ids_are_fixed_at_write_time(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    stored = box.append(panic)
    assert box.pending()[0].payload == stored.payload  # every resend: same bytes, same id
    box.close()


def test_a_builder_that_ignores_its_id_and_seq_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(OutboxError):
        box.append(lambda _id, seq: panic("01HZZZZZZZZZZZZZZZZZZZZZZZ", seq))
    assert box.depth == 0
    assert box.last_seq == 0  # rolled back with the event
    box.close()
