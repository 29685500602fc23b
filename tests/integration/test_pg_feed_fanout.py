"""Every worker's operator feed shows every alert change, whichever worker made it.

Two fleet servers (uvicorn in threads, as two `nigehbaan server` workers
behind a load balancer) share one PostgreSQL schema: an alert acknowledged
through worker A reaches an SSE client of worker B through LISTEN/NOTIFY,
and B's replay (`Last-Event-ID`) still works. Plus the pure parts: payloads
stay under PostgreSQL's 8,000-byte limit and malformed ones are ignored.
Real PostgreSQL (tests/support/db.py: skipped, saying so, when unreachable).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlmodel import Session

from fleet_server.alerting import AlertNotice, ensure_default_policies, load_policies
from fleet_server.app import create_app
from fleet_server.broker import free_port
from fleet_server.db import make_engine
from fleet_server.feed_notify import PAYLOAD_MAX, FeedFanout, _payloads
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, AlertPublic, utcnow
from fleet_server.schema import migrate
from fleet_server.settings import Settings
from fleet_server.stream import Broadcaster, cursor_of
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PanicEvent
from tests.support.db import PG_URL
from tests.support.polling import wait_for

API = "/api/v1"
ADMIN_PASSWORD = "fan-out-admin-pw"


class Worker:
    """create_app() under uvicorn in a thread, on a free port (one fleet-server worker)."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                log_level="warning", log_config=None)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=30, what="uvicorn start-up")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[list[str]]:
    started: list[Worker] = []
    try:
        for name in ("a", "b"):  # one after the other: the first migrates the schema
            settings = Settings(
                data_dir=tmp_path / name, db_url=pg_url, broker_url=None, port=free_port(),
                admin_password=ADMIN_PASSWORD, secret_key="shared-secret-of-the-workers",
                sse_keepalive_s=1.0, escalation_tick_s=0.5,
            )  # fmt: skip
            worker = Worker(settings)
            worker.start()
            started.append(worker)
        yield [w.base_url for w in started]
    finally:
        for worker in started:
            worker.stop()


def _token(base: str) -> str:
    response = httpx.post(
        f"{base}{API}/login/access-token",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _press(pg_url: str, node: str) -> str:
    """An alert stored as another worker's ingest would store it (no feed of its own)."""
    engine = make_engine(pg_url)
    try:
        press = PanicEvent(node_id=node, ts=utcnow(), event_id=new_event_id(), seq=1)
        envelopes, _ = decode_all([(topic_for(press), encode(press))])
        with Session(engine, expire_on_commit=False) as session:
            policies = load_policies(session=session, ack_timeout_s=120)
            out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
            session.commit()
        return out.notices[0].alert.id
    finally:
        engine.dispose()


class FeedReader:
    """One SSE client of a worker, in a thread, keeping every alert frame it reads."""

    def __init__(self, base: str, token: str, *, last_event_id: str | None = None) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []  # (id, data)
        self.connected = threading.Event()
        self._stop = threading.Event()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._args = (f"{base}{API}/stream/alerts", {"access_token": token}, headers)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        url, params, headers = self._args
        with httpx.stream("GET", url, params=params, headers=headers, timeout=20) as response:
            assert response.status_code == 200
            cursor = ""
            for line in response.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("id: "):
                    cursor = line.removeprefix("id: ")
                elif line.startswith("data: "):
                    self.frames.append((cursor, json.loads(line.removeprefix("data: "))))
                if self._stop.is_set():
                    return

    def seen(self, alert_id: str, state: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            f for f in self.frames
            if f[1].get("alert", {}).get("id") == alert_id and f[1]["alert"]["state"] == state
        ]  # fmt: skip

    def close(self) -> None:
        self._stop.set()  # the next keepalive ends the read
        self.thread.join(10)


def test_an_alert_acknowledged_on_worker_a_appears_on_worker_b_s_feed(
    workers: list[str], pg_url: str
) -> None:
    a, b = workers
    alert_id = _press(pg_url, "lhr-fan-0001")
    before = utcnow() - timedelta(seconds=1)
    reader = FeedReader(b, _token(b))
    try:
        assert reader.connected.wait(20), "worker B's feed did not open"
        admin_a = {"Authorization": f"Bearer {_token(a)}"}
        response = httpx.post(
            f"{a}{API}/alerts/{alert_id}/transitions",
            json={"to": "acknowledged", "note": "on it"},
            headers=admin_a,
            timeout=20,
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: reader.seen(alert_id, "acknowledged"), timeout=20,
                 what="the acknowledgement on worker B's feed")  # fmt: skip
        ((cursor, data),) = reader.seen(alert_id, "acknowledged")
        assert data["op"] == "transition"
        assert cursor == cursor_of(AlertPublic.model_validate(data["alert"]).updated_at)
        health_b = httpx.get(f"{b}/healthz", timeout=20).json()["feed_fanout"]
        assert health_b["listening"] is True
        assert health_b["received"] >= 1  # the change came from the other worker
    finally:
        reader.close()
    # A client of B that was away is replayed the change from the database.
    again = FeedReader(b, _token(b), last_event_id=cursor_of(before))
    try:
        wait_for(lambda: again.seen(alert_id, "acknowledged"), timeout=20, what="B's replay")
        assert again.seen(alert_id, "acknowledged")[0][1]["op"] == "sync"
    finally:
        again.close()


def _notice(i: int) -> AlertNotice:
    alert = AlertPublic(
        id=f"01J{i:023d}", node_id=f"lhr-{i:04d}", type="panic", severity="P1",
        received_at=utcnow(), updated_at=utcnow(),
    )  # fmt: skip
    return AlertNotice(op="escalated", alert=alert, event_id=new_event_id())


def test_a_long_list_of_changes_goes_as_several_payloads_each_under_the_limit() -> None:
    notices = [_notice(i) for i in range(500)]
    payloads = _payloads("worker-a", notices)
    assert len(payloads) > 1
    assert all(len(p.encode()) < PAYLOAD_MAX for p in payloads)
    ids = [c[0] for p in payloads for c in json.loads(p)["c"]]
    assert ids == [n.alert.id for n in notices]


@pytest.mark.parametrize(
    "payload",
    ["not json", "{}", '{"w": "x", "c": [["id", "deleted", null]]}', '{"w": "x", "c": [[1]]}'],
)
def test_a_malformed_notification_is_ignored_and_publishes_nothing(
    payload: str, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    broadcaster = Broadcaster()
    fanout = FeedFanout(engine, broadcaster)
    try:
        fanout._received(payload)  # the listener's handler, without a database
        assert (broadcaster.published, fanout.received) == (0, 0)
    finally:
        engine.dispose()


class RecordingBroadcaster(Broadcaster):
    """Keeps what the fan-out publishes (the Broadcaster's own fan-out is tested elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[str] = []

    def publish_threadsafe(self, items: Sequence[str]) -> None:
        self.items += list(items)


def test_a_listener_whose_connection_is_cut_asks_for_a_resync_and_hears_again(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)
    alert_id = _press(pg_url, "lhr-fan-0002")
    with Session(engine) as session:
        alert = AlertPublic.model_validate(session.get(Alert, alert_id))
    a, b = FeedFanout(engine, RecordingBroadcaster()), FeedFanout(engine, RecordingBroadcaster())
    heard: RecordingBroadcaster = b.broadcaster  # type: ignore[assignment]
    b.start()
    try:
        wait_for(b.listening.is_set, timeout=20, what="B listening")
        pid = b.listener_pid
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: b.listening.is_set() and b.listener_pid not in (None, pid),
                 timeout=20, what="B listening again")  # fmt: skip
        wait_for(lambda: any("event: resync" in i for i in heard.items), timeout=20,
                 what="a resync frame for B's clients")  # fmt: skip
        a.announce([AlertNotice(op="escalated", alert=alert)])
        wait_for(lambda: any(alert_id in i for i in heard.items), timeout=20,
                 what="A's change on B after the reconnect")  # fmt: skip
        assert a.sent == 1
        assert b.received == 1
    finally:
        b.stop()
        a.stop()
        engine.dispose()


def test_another_workers_notification_is_timed_from_its_sender_and_read_in_one_round_trip(
    pg_url: str,
) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)
    alert_id = _press(pg_url, "lhr-fan-0003")
    heard = RecordingBroadcaster()
    fanout = FeedFanout(engine, heard)
    try:
        (payload,) = _payloads("worker-a", [_notice(0)], sent_at=1_700_000_000.5)
        assert json.loads(payload)["t"] == 1_700_000_000.5
        sent = time.time() - 0.05  # the sender announced 50 ms ago
        fanout._received(json.dumps({"w": "a", "t": sent, "c": [[alert_id, "created", None]]}))
        # An older worker's notification has no `t`: shown, not counted in the lag.
        fanout._received(json.dumps({"w": "a", "c": [[alert_id, "escalated", None]]}))
        assert len(heard.items) == 2
        assert all(alert_id in item for item in heard.items)
        timings = fanout.timings()
        assert timings["notify_lag_ms"]["n"] == 1
        assert (timings["notify_lag_ms"]["p50"] or 0) >= 50
        assert timings["handling_ms"]["n"] == 2
        reader = fanout._reader  # held for the next notification, outside the pool, autocommit
        assert reader is not None
        driver = reader.connection.dbapi_connection
        assert driver is not None
        assert driver.autocommit  # no BEGIN/ROLLBACK around a read
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        fanout.stop()
        fanout._close_reader()
        engine.dispose()
