"""Response times are measured on the server's clock; a node's wrong clock is flagged (item 3).

A Raspberry Pi has no real-time clock: until NTP answers it stamps
everything 1970. One such press made a district's `press_to_received` p90
57 years. Through the API: the press still opens its alert and keeps its
device time as evidence, but it is flagged, left out of the stages that
start at the press (and counted there), and the node's record shows its
clock offset and how many of its events had an implausible device time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.alerting import load_policies, transition_alert
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.ingest import IngestWorker, decode_all, store_batch
from fleet_server.models import Event, Node, utcnow
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PanicEvent, Status, Telemetry, WireModel
from tests.support.api import API, login, runtime_of
from tests.support.ingest import RecordedAcks, migrated_engine

DISTRICT = "lahore-shadman"
BEFORE_NTP = datetime(1970, 1, 1, 0, 0, 7, tzinfo=timezone.utc)


def send(client: TestClient, *messages: WireModel, at: datetime) -> None:
    envelopes, rejections = decode_all([(topic_for(m), encode(m)) for m in messages])
    assert not rejections
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120.0)
        store_batch(session=session, envelopes=envelopes, now=at, policies=policies)
        session.commit()


def pillar(node: str, clock: datetime) -> list[WireModel]:
    """A pillar connecting with its clock reading `clock`, and one telemetry report."""
    return [
        Status(node_id=node, ts=clock, state="online", bd_seq=1),
        Birth(
            node_id=node, ts=clock, bd_seq=1, serial=f"SN-{node}", hardware="rpi4",
            firmware=Firmware(version="0.1.0"), capabilities=[], config_hash="0" * 64,
            district=DISTRICT, site_id="shadman-chowk",
        ),
        Telemetry(node_id=node, ts=clock + timedelta(seconds=1), uptime_s=9.0),
    ]  # fmt: skip


def test_a_press_stamped_1970_does_not_make_the_p90_57_years(client: TestClient) -> None:
    now = utcnow()
    good = [f"lhr-shd-{i:02d}" for i in range(1, 4)]
    skewed = "lhr-shd-99"
    for node in good:
        send(client, *pillar(node, now), at=now)
        press = PanicEvent(node_id=node, ts=now, event_id=new_event_id(), seq=1)
        send(client, press, at=now + timedelta(milliseconds=200))
    send(client, *pillar(skewed, BEFORE_NTP), at=now)
    bad_press = PanicEvent(node_id=skewed, ts=BEFORE_NTP, event_id=new_event_id(), seq=1)
    received = now + timedelta(milliseconds=300)
    send(client, bad_press, at=received)
    headers = login(client, "op")

    # Every alert is resolved a minute after it was received.
    alerts = client.get(f"{API}/alerts", params={"limit": 100}, headers=headers).json()["data"]
    mine = [a for a in alerts if a["district"] == DISTRICT]
    assert len(mine) == 4
    with Session(runtime_of(client).engine) as session:
        for alert in mine:
            transition_alert(
                session=session, alert_id=alert["id"], to="resolved", actor="user:op",
                ack_timeout_s=120.0,
                now=datetime.fromisoformat(alert["received_at"]) + timedelta(minutes=1),
            )  # fmt: skip

    metrics = client.get(f"{API}/metrics/response-times", headers=headers).json()
    (shadman,) = [d for d in metrics["data"] if d["district"] == DISTRICT]
    stages = shadman["stages"]
    assert stages["press_to_received"]["p90_s"] < 1.0  # was 1.8e9 s
    assert stages["press_to_received"]["count"] == 3
    assert stages["press_to_received"]["excluded"] == 1
    assert stages["press_to_resolved"]["max_s"] < 61.0
    # From the server's receive time every alert counts, the skewed one too.
    assert stages["received_to_resolved"]["count"] == 4
    assert stages["received_to_resolved"]["p90_s"] == 60.0
    assert shadman["implausible_press_times"] == 1

    # The press keeps its device time as evidence, flagged.
    events = client.get(f"{API}/events", params={"node_id": skewed}, headers=headers).json()
    (event,) = events["data"]
    assert event["ts"].startswith("1970-01-01T00:00:07")
    assert event["ts_implausible"] is True
    assert datetime.fromisoformat(event["received_at"]) == received

    # The node's record shows its clock: ~56 years behind, one implausible event.
    node = client.get(f"{API}/nodes/{skewed}", headers=headers).json()
    assert node["clock_offset_s"] < -(now - BEFORE_NTP).total_seconds() + 5
    assert node["implausible_device_times"] == 1
    fine = client.get(f"{API}/nodes/{good[0]}", headers=headers).json()
    assert abs(fine["clock_offset_s"]) < 5
    assert fine["implausible_device_times"] == 0


def test_the_ingest_worker_counts_implausible_device_times_by_its_rules(tmp_path: Path) -> None:
    # The server's own path (IngestWorker, as app.py builds it from the settings).
    engine = migrated_engine(tmp_path / "fleet.db")
    try:
        worker = IngestWorker(
            engine=engine, publisher=RecordedAcks(), notify=lambda notices: None,
            ack_timeout_s=120.0, device_time=DeviceTimeRules(future_s=300.0, past_s=3600.0),
        )  # fmt: skip
        now = utcnow()
        fresh = PanicEvent(node_id="lhr-shd-50", ts=now, event_id=new_event_id(), seq=1)
        held = PanicEvent(  # two hours in the outbox: beyond this server's 1 h tolerance
            node_id="lhr-shd-51", ts=now - timedelta(hours=2), event_id=new_event_id(), seq=1
        )
        before_ntp = PanicEvent(node_id="lhr-shd-52", ts=BEFORE_NTP, event_id=new_event_id(), seq=1)
        worker.process([(topic_for(m), encode(m)) for m in (fresh, held, before_ntp)])
        assert worker.stats.implausible_device_times == 2
        with Session(engine) as session:
            flagged = dict(session.exec(select(Event.node_id, Event.ts_implausible)).all())
            counts = dict(session.exec(select(Node.node_id, Node.implausible_device_times)).all())
        assert flagged == {"lhr-shd-50": False, "lhr-shd-51": True, "lhr-shd-52": True}
        assert counts == {"lhr-shd-50": 0, "lhr-shd-51": 1, "lhr-shd-52": 1}
    finally:
        engine.dispose()
