"""Which camera nodes a panic asks for a still, and what the alert records (SQLite and PostgreSQL).

Same site first, then within the radius by coordinates, online before
offline, nearest first, never a decommissioned node nor a node without
cameras, at most `max_nodes`. The pull runs after the commit on its own
thread: a created panic alert is pulled, a test press or another alert type
is not. The alert's record says who was asked and, per node, whether it is
still waiting, answered (with the hashes) or expired.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import load_policies, notice, open_alert
from fleet_server.alerting.snapshots import (
    SnapshotPuller,
    alert_snapshots,
    distance_m,
    nearest_camera_nodes,
)
from fleet_server.db import make_engine
from fleet_server.models import Alert, AlertType, Node, NodeCommand, NodeReply, utcnow
from fleet_server.models.plate import NodeCamera
from fleet_server.models.snapshot import AlertSnapshot
from fleet_server.schema import migrate
from proto.codec import decode
from proto.messages import SnapshotCommand

LAT, LON = 24.8607, 67.0011  # Karachi
SITE = "saddar-empress-market"


def north(metres: float) -> float:
    return LAT + metres / 111_320.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = make_engine(db_url)
    migrate(made)
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture
def fleet(engine: Engine) -> Engine:
    """A pillar and camera nodes around it (and one node without a camera)."""
    with Session(engine) as session:
        session.add(
            Node(node_id="khi-pillar-01", site_id=SITE, district="saddar", lat=LAT, lon=LON)
        )
        nodes = [
            # node, site, metres north, online, lifecycle, has a camera
            ("khi-cam-site", SITE, None, False, "active", True),
            ("khi-cam-100", "saddar-a", 100.0, True, "active", True),
            ("khi-cam-200", "saddar-b", 200.0, False, "active", True),
            ("khi-cam-250", "saddar-c", 250.0, True, "active", True),
            ("khi-cam-old", "saddar-d", 30.0, True, "decommissioned", True),
            ("khi-cam-far", "clifton", 900.0, True, "active", True),
            ("khi-pillar-02", "saddar-e", 20.0, True, "active", False),
        ]
        for node_id, site, metres, online, lifecycle, camera in nodes:
            session.add(
                Node(
                    node_id=node_id, site_id=site, district="saddar", online=online,
                    lifecycle=lifecycle, lat=None if metres is None else north(metres),
                    lon=None if metres is None else LON,
                )
            )  # fmt: skip
            if camera:
                session.add(NodeCamera(node_id=node_id, camera_id="road"))
        session.commit()
    return engine


def test_the_same_site_comes_first_then_online_nodes_nearest_first_within_the_radius(
    fleet: Engine,
) -> None:
    with Session(fleet) as session:
        pillar = session.get(Node, "khi-pillar-01")
        assert pillar is not None
        found = nearest_camera_nodes(session, pillar, radius_m=300.0, max_nodes=4)
        assert [(c.node_id, c.reason) for c in found] == [
            ("khi-cam-site", "same_site"),  # no coordinates, but the pillar's own site
            ("khi-cam-100", "nearby"),
            ("khi-cam-250", "nearby"),  # online before the nearer offline node
            ("khi-cam-200", "nearby"),
        ]
        assert found[1].distance_m == pytest.approx(100.0, rel=0.01)
        two = nearest_camera_nodes(session, pillar, radius_m=300.0, max_nodes=2)
        assert [c.node_id for c in two] == ["khi-cam-site", "khi-cam-100"]
        same_site_only = nearest_camera_nodes(session, pillar, radius_m=0.0, max_nodes=4)
        assert [c.node_id for c in same_site_only] == ["khi-cam-site"]
        assert nearest_camera_nodes(session, pillar, radius_m=300.0, max_nodes=0) == []


def test_distance_is_great_circle_metres() -> None:
    assert distance_m(LAT, LON, north(1000.0), LON) == pytest.approx(1000.0, rel=0.005)
    assert distance_m(LAT, LON, LAT, LON) == 0.0


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.messages.append((topic, payload))


def _alert(engine: Engine, alert_type: str, *, test: bool = False) -> Alert:
    with Session(engine, expire_on_commit=False) as session:
        pillar = session.get(Node, "khi-pillar-01")
        assert pillar is not None
        policies = load_policies(session=session, ack_timeout_s=120)
        alert = open_alert(
            session=session, node=pillar, alert_type=alert_type, now=utcnow(),
            policies=policies, test=test,
        )  # fmt: skip
        session.commit()
        return alert


def test_a_panic_alert_pulls_after_its_commit_and_a_test_press_or_a_tamper_does_not(
    fleet: Engine,
) -> None:
    published = Published()
    puller = SnapshotPuller(
        engine=fleet, publisher=lambda: published, radius_m=300.0, max_nodes=2, ttl_s=30.0
    )
    panic, test_press = _alert(fleet, AlertType.PANIC), _alert(fleet, AlertType.PANIC, test=True)
    tamper = _alert(fleet, AlertType.TAMPER)
    now = utcnow()
    puller.start()
    puller([notice("created", a, now=now) for a in (panic, test_press, tamper)])
    puller([notice("transition", panic, now=now)])  # only an opening pulls
    puller.stop()  # drains the queue first
    assert (puller.pulled, puller.requested, puller.failed) == (1, 2, 0)
    commands = [decode(topic, payload) for topic, payload in published.messages]
    assert all(isinstance(c, SnapshotCommand) for c in commands)
    assert {c.node_id for c in commands} == {"khi-cam-site", "khi-cam-100"}
    assert {getattr(c, "alert_id", None) for c in commands} == {panic.id}
    with Session(fleet) as session:
        rows = session.exec(select(AlertSnapshot)).all()
        assert {r.alert_id for r in rows} == {panic.id}
        sent = session.exec(select(NodeCommand).where(col(NodeCommand.name) == "snapshot")).all()
        assert {c.request_id for c in sent} == {r.request_id for r in rows}


def test_the_alert_record_says_waiting_answered_or_expired(fleet: Engine) -> None:
    panic = _alert(fleet, AlertType.PANIC)
    puller = SnapshotPuller(
        engine=fleet, publisher=lambda: None, radius_m=300.0, max_nodes=2, ttl_s=30.0
    )
    site, beside = puller.pull(panic.id)
    with Session(fleet) as session:
        now = utcnow()
        assert {r["status"] for r in alert_snapshots(session, panic.id, now=now)} == {"waiting"}
        digest = "ab" * 32
        session.add(
            NodeReply(
                node_id=site.node_id, request_id=site.request_id, ok=True, ts=now,
                result={"alert_id": panic.id,
                        "snapshots": [{"camera_id": "road", "sha256": digest}], "missing": []},
            )
        )  # fmt: skip
        session.commit()
        later = now + timedelta(seconds=31)
        rows = {r["node_id"]: r for r in alert_snapshots(session, panic.id, now=later)}
    assert rows[site.node_id]["status"] == "answered"
    assert rows[site.node_id]["snapshots"][0]["sha256"] == digest
    assert rows[site.node_id]["reason"] == "same_site"
    assert rows[beside.node_id]["status"] == "expired"
    assert rows[beside.node_id]["distance_m"] == pytest.approx(100.0, rel=0.01)
