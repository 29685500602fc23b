"""A reconnecting feed client is replayed every alert changed since its cursor, in order.

Pure rules (cursor format) and the replay query against a real migrated
database; the end-to-end story (a console away across a server crash) is in
tests/e2e/test_e2e_panic.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import notice
from fleet_server.feed_replay import replay_frames
from fleet_server.models import Alert
from fleet_server.stream import alert_frame, cursor_of, parse_cursor
from fleet_server.timers import run_timers_once
from tests.support.ingest import T0, sqlite_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


def _alert(engine: Engine, node: str, *, changed: datetime, queue: str | None = None) -> str:
    with Session(engine) as session:
        alert = Alert(
            node_id=node, type="panic", severity="P1", received_at=changed, updated_at=changed,
            queue=queue,
        )  # fmt: skip
        session.add(alert)
        session.commit()
        return alert.id


Frame = tuple[str, str, dict[str, Any]]  # (id, event, data)


def _frames(engine: Engine, since: datetime, limit: int = 100) -> list[Frame]:
    out: list[Frame] = []
    for text in replay_frames(engine, since, limit=limit):
        fields = dict(line.split(": ", 1) for line in text.strip().split("\n"))
        out.append((fields.get("id", ""), fields["event"], json.loads(fields["data"])))
    return out


def test_a_cursor_is_the_change_time_in_utc_and_reads_back_exactly() -> None:
    at = datetime(2025, 3, 1, 14, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=5)))
    assert cursor_of(at) == "2025-03-01T09:00:00.123456Z"
    assert parse_cursor(cursor_of(at)) == at
    assert cursor_of(at.replace(tzinfo=None)) == "2025-03-01T14:00:00.123456Z"  # naive = UTC


@pytest.mark.parametrize("bad", ["", "yesterday", "2025-03-01", "2025-03-01T09:00:00Z", "1e9"])
def test_anything_else_is_not_a_cursor(bad: str) -> None:
    with pytest.raises(ValueError, match="not a feed cursor"):
        parse_cursor(bad)


def test_alerts_changed_at_or_after_the_cursor_come_oldest_change_first(engine: Engine) -> None:
    _alert(engine, "lhr-0001", changed=T0)
    seen = _alert(engine, "lhr-0002", changed=T0 + timedelta(seconds=1))
    later = _alert(engine, "lhr-0003", changed=T0 + timedelta(seconds=3))
    same_time = _alert(engine, "lhr-0004", changed=T0 + timedelta(seconds=1))

    frames = _frames(engine, T0 + timedelta(seconds=1))

    assert [f[1] for f in frames] == ["alert"] * 3
    assert all(f[2]["op"] == "sync" for f in frames)
    ids = [f[2]["alert"]["id"] for f in frames]
    assert sorted(ids[:2]) == sorted([seen, same_time])  # the cursor's own instant again
    assert ids[2] == later
    assert [f[0] for f in frames] == sorted(f[0] for f in frames)
    assert frames[2][0] == cursor_of(T0 + timedelta(seconds=3))


def test_more_changes_than_the_limit_ask_the_client_to_re_read_the_list(engine: Engine) -> None:
    for i in range(4):
        _alert(engine, f"lhr-{i:04d}", changed=T0 + timedelta(seconds=i))

    (only,) = _frames(engine, T0, limit=3)

    assert only[1] == "resync"
    assert "more than 3 alert changes" in only[2]["reason"]
    assert len(_frames(engine, T0, limit=4)) == 4


@pytest.mark.parametrize("policies", ["panic ladder", "none: catch-all queue"])
def test_an_escalation_moves_the_cursor_so_a_client_away_sees_it(
    engine: Engine, policies: str
) -> None:
    if policies.startswith("none"):
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM escalationlevel")
            connection.exec_driver_sql("DELETE FROM escalationpolicy")
    alert_id = _alert(engine, "lhr-0009", changed=T0)
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        alert.next_escalation_at = T0 + timedelta(seconds=30)
        session.add(alert)
        session.commit()
    later = T0 + timedelta(seconds=31)

    notices = run_timers_once(engine=engine, now=later, ack_timeout_s=120.0, offline_grace_s=15)

    assert [n.alert.id for n in notices] == [alert_id]
    frames = _frames(engine, T0 + timedelta(seconds=1))
    assert [f[2]["alert"]["id"] for f in frames] == [alert_id]
    assert frames[0][0] == cursor_of(later)


def test_a_live_frame_carries_the_same_cursor_the_replay_would_give(engine: Engine) -> None:
    alert_id = _alert(engine, "lhr-0010", changed=T0)
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        live = alert_frame(notice("created", alert, now=T0))
    replayed = replay_frames(engine, T0, limit=10)[0]
    assert live.split("\n")[0] == replayed.split("\n")[0] == f"id: {cursor_of(T0)}"
