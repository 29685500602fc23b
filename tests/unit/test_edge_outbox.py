"""The durable outbox: on disk before publish, gone only on the server's ack."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
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
    # A child process appends and dies at once (no close, no checkpoint), as in a
    # crash: the committed row is read back from the files it left, so it was not
    # sitting in that process's memory waiting to be flushed.
    code = (
        "import os, sys\n"
        "from datetime import datetime, timezone\n"
        "from edge_agent.outbox import Outbox\n"
        "from proto.messages import PanicEvent\n"
        "ts = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)\n"
        "box = Outbox(sys.argv[1])\n"
        "s = box.append(lambda i, q: PanicEvent(node_id=sys.argv[2], ts=ts, event_id=i, seq=q))\n"
        "sys.stdout.write(s.event_id)\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    path = tmp_path / "o.db"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), NODE], capture_output=True, text=True, check=True
    )
    event_id = done.stdout
    other = sqlite3.connect(str(path))
    rows = other.execute("SELECT event_id, topic, payload FROM events").fetchall()
    other.close()
    assert [r[0] for r in rows] == [event_id]
    decoded = decode(rows[0][1], rows[0][2])
    assert isinstance(decoded, PanicEvent)
    assert decoded.event_id == event_id
    assert decoded.seq == 1
    box = Outbox(path)  # and the outbox itself picks it up again
    assert [e.event_id for e in box.pending()] == [event_id]
    box.close()


def test_no_shm_file_and_one_descriptor_fewer(tmp_path: Path) -> None:
    # locking_mode=EXCLUSIVE before WAL: the wal-index lives in heap memory, so
    # a node holds two files (database, -wal), not three (docs/edge-agent.md).
    path = tmp_path / "o.db"
    box = Outbox(path)
    box.append(panic)
    box.ack([box.append(fault).event_id])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.db", "o.db-wal"]
    fd_dir = Path("/proc/self/fd")
    if fd_dir.is_dir():
        held = set()
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                held.add(os.readlink(fd))
        assert {str(path), f"{path}-wal"} <= held
        assert f"{path}-shm" not in held
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.close()
    box = Outbox(path)  # reopening an existing WAL outbox makes no -shm either
    assert len(box.pending()) == 1
    assert not (tmp_path / "o.db-shm").exists()
    box.close()


def test_a_second_process_can_neither_read_nor_write_an_open_outbox(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    first = box.append(panic)
    code = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)\n"
        "out = []\n"
        "for sql in ('SELECT count(*) FROM events', 'DELETE FROM events',\n"
        "            \"INSERT INTO counters (name, value) VALUES ('seq', 99) \"\n"
        "            'ON CONFLICT(name) DO UPDATE SET value = 99'):\n"
        "    try:\n"
        "        db.execute(sql).fetchall()\n"
        "        out.append('done')\n"
        "    except sqlite3.OperationalError as exc:\n"
        "        out.append(str(exc))\n"
        "print(','.join(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ",".join(["database is locked"] * 3)
    with pytest.raises(OutboxError, match="locked"):
        Outbox(path, busy_timeout_s=0.2)  # a second agent on the same data dir
    second = box.append(panic)
    assert second.seq == 2
    assert [e.event_id for e in box.pending()] == [first.event_id, second.event_id]
    box.close()
    other = sqlite3.connect(str(path))  # released on close
    assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    other.close()


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
