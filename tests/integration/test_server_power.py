"""Power at the server: history, site targets, power alerts, the overview and the chart API.

Messages go through the ingest's own `store_batch`, so the alert rules are
exercised exactly as MQTT ingest runs them; the API is driven with FastAPI's
TestClient (MQTT off).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import ensure_default_policies, load_policies
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, Role, UserCreate
from fleet_server.models.power import PowerSample, PowerSiteUpdate
from fleet_server.power import node_history, power_overview, set_site_targets
from fleet_server.runtime import Runtime
from fleet_server.schema import migrate
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import (
    Birth,
    Firmware,
    GeoPoint,
    PowerEvent,
    PowerTelemetry,
    Status,
    Telemetry,
    WireModel,
)

API = "/api/v1"
# 21:00 in Lahore (UTC+5): night.
EVENING = datetime(2025, 12, 1, 16, 0, tzinfo=timezone.utc)
LAHORE = GeoPoint(lat=31.52, lon=74.36)
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)  # the server's clock; unrelated to node time


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    # SQLite, and PostgreSQL with its daily power partitions (migration 0018).
    engine = make_engine(db_url)
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)
    yield engine
    engine.dispose()


def ingest(engine: Engine, *messages: WireModel) -> None:
    envelopes, rejections = decode_all([(topic_for(m), encode(m)) for m in messages])
    assert not rejections
    with Session(engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=NOW, policies=policies)
        session.commit()


def birth(node: str, *, site: str = "gulberg-001", location: GeoPoint | None = LAHORE) -> Birth:
    return Birth(
        node_id=node,
        ts=EVENING,
        bd_seq=1,
        serial=f"S-{node}",
        hardware="sim",
        firmware=Firmware(version="1"),
        capabilities=["panic_button", "power_monitor"],
        config_hash="0" * 64,
        site_id=site,
        district="lahore-gulberg",
        location=location,
    )


def telemetry(node: str, at: datetime, **power: Any) -> Telemetry:
    values: dict[str, Any] = {
        "panel_w": 0.0,
        "battery_v": 13.1,
        "battery_a": -2.0,
        "battery_soc": 0.8,
        "battery_temp_c": 20.0,
        "load_w": 26.0,
        "mains_present": False,
        "autonomy_h": 30.0,
        "policy_step": 0,
    }
    values.update(power)
    return Telemetry(node_id=node, ts=at, uptime_s=10.0, power=PowerTelemetry(**values))


_seq: dict[str, int] = {}


def power_event(node: str, at: datetime, kind: str, **fields: Any) -> PowerEvent:
    _seq[node] = _seq.get(node, 0) + 1
    return PowerEvent(
        node_id=node, ts=at, event_id=new_event_id(), seq=_seq[node], power=kind, **fields
    )


def power_alerts(engine: Engine, node: str) -> list[Alert]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Alert)
                .where(Alert.node_id == node, Alert.type == "power")
                .order_by(col(Alert.received_at))
            )
        )


def kinds(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [((a.detail or "").split(":")[0], a.state) for a in alerts]


# ------------------------------------------------------------------ alerts


def test_autonomy_below_the_site_target_raises_one_alert_until_it_recovers(engine: Engine) -> None:
    node = "lhr-pwr-0001"
    ingest(engine, birth(node), telemetry(node, EVENING, autonomy_h=12.0))
    assert power_alerts(engine, node) == []
    ingest(engine, telemetry(node, EVENING + timedelta(minutes=30), autonomy_h=7.5))
    ingest(engine, telemetry(node, EVENING + timedelta(minutes=60), autonomy_h=6.0))
    # The node's own durable event for the same condition joins the open alert.
    ingest(
        engine,
        power_event(node, EVENING + timedelta(minutes=61), "autonomy_low", autonomy_h=5.9),
    )
    (alert,) = power_alerts(engine, node)
    assert (alert.severity, alert.state, alert.press_count) == ("P3", "new", 2)
    assert alert.detail is not None
    assert alert.detail.startswith("autonomy_low:")
    assert "site target 8 h" in alert.detail
    # Shedding load raises the autonomy at the present load; still degraded, still open.
    ingest(engine, telemetry(node, EVENING + timedelta(hours=2), autonomy_h=15.0, policy_step=3))
    assert kinds(power_alerts(engine, node)) == [("autonomy_low", "new")]
    ingest(engine, telemetry(node, EVENING + timedelta(hours=14), autonomy_h=20.0, policy_step=0))
    assert kinds(power_alerts(engine, node)) == [("autonomy_low", "resolved")]


def test_the_per_site_target_decides(engine: Engine) -> None:
    node = "pew-pillar-0001"
    with Session(engine) as session:
        set_site_targets(
            session=session,
            site_id="kp-hayatabad-01",
            update=PowerSiteUpdate(autonomy_target_h=24.0),
            actor="user:tech",
            now=NOW,
        )
        session.commit()
    ingest(engine, birth(node, site="kp-hayatabad-01"), telemetry(node, EVENING, autonomy_h=20.0))
    (alert,) = power_alerts(engine, node)
    assert "site target 24 h" in (alert.detail or "")
    # The same 20 h on an 8-hour site is fine.
    other = "lhr-pwr-0002"
    ingest(engine, birth(other), telemetry(other, EVENING, autonomy_h=20.0))
    assert power_alerts(engine, other) == []


def test_mains_lost_and_restored_opens_and_resolves_one_alert(engine: Engine) -> None:
    node = "lhr-mains-0001"
    ingest(engine, birth(node), telemetry(node, EVENING, mains_present=True))
    ingest(engine, power_event(node, EVENING + timedelta(minutes=5), "mains_lost"))
    ingest(engine, telemetry(node, EVENING + timedelta(minutes=10), mains_present=False))
    assert kinds(power_alerts(engine, node)) == [("mains_lost", "new")]
    ingest(engine, power_event(node, EVENING + timedelta(hours=3), "mains_restored"))
    (alert,) = power_alerts(engine, node)
    assert alert.state == "resolved"


def test_kinds_are_deduplicated_separately(engine: Engine) -> None:
    node = "khi-hot-0001"
    ingest(engine, birth(node), telemetry(node, EVENING, mains_present=True))
    ingest(
        engine,
        power_event(node, EVENING, "mains_lost"),
        power_event(node, EVENING, "battery_fault", detail="voltage_sag: 12.1 V at 3 A"),
        telemetry(node, EVENING + timedelta(minutes=1), battery_temp_c=64.0, autonomy_h=40.0),
        power_event(node, EVENING + timedelta(minutes=2), "mains_lost"),
    )
    found = sorted(kinds(power_alerts(engine, node)))
    assert found == [("battery_fault", "new"), ("mains_lost", "new")]
    mains = next(a for a in power_alerts(engine, node) if (a.detail or "").startswith("mains_"))
    assert mains.press_count == 2


def test_a_node_that_drops_off_on_an_empty_battery_at_night_went_dark(engine: Engine) -> None:
    node = "lhr-under-0001"
    ingest(
        engine,
        birth(node),
        Status(node_id=node, ts=EVENING, state="online", bd_seq=1),
        telemetry(node, EVENING, battery_soc=0.12, autonomy_h=0.4, policy_step=4),
        Status(node_id=node, ts=EVENING, state="offline", bd_seq=1),
    )
    found = {(a.detail or "").split(":")[0]: a for a in power_alerts(engine, node)}
    assert set(found) == {"autonomy_low", "dark_at_night"}
    assert (found["dark_at_night"].detail or "").startswith("dark_at_night: went dark at night")
    # A healthy node dropping off at night is an outage, not a dark site.
    healthy = "lhr-pwr-0003"
    ingest(
        engine,
        birth(healthy),
        Status(node_id=healthy, ts=EVENING, state="online", bd_seq=1),
        telemetry(healthy, EVENING, battery_soc=0.9),
        Status(node_id=healthy, ts=EVENING, state="offline", bd_seq=1),
    )
    assert power_alerts(engine, healthy) == []


def test_a_node_that_goes_dark_by_day_is_not_dark_at_night(engine: Engine) -> None:
    node = "lhr-under-0002"
    noon = datetime(2025, 12, 1, 7, 0, tzinfo=timezone.utc)
    ingest(
        engine,
        birth(node),
        Status(node_id=node, ts=noon, state="online", bd_seq=1),
        telemetry(node, noon, battery_soc=0.1, policy_step=4),
        Status(node_id=node, ts=noon, state="offline", bd_seq=1),
    )
    assert power_alerts(engine, node) == []


# ---------------------------------------------------------------- history


def test_history_is_downsampled_to_ten_minute_buckets_on_the_node_clock(engine: Engine) -> None:
    node = "lhr-pwr-0004"
    messages: list[WireModel] = [birth(node)]
    for minute in range(0, 60, 2):  # a reading every two minutes for an hour
        messages.append(
            telemetry(
                node,
                EVENING + timedelta(minutes=minute),
                panel_w=float(minute),
                battery_soc=0.8 - minute / 1000,
            )
        )
    ingest(engine, *messages)
    ingest(engine, telemetry(node, EVENING + timedelta(days=40), battery_soc=0.5))
    with Session(engine) as session:
        rows = session.exec(select(PowerSample).where(PowerSample.node_id == node)).all()
        node_row = session.get(Node, node)
        assert node_row is not None
        history = node_history(session=session, node=node_row, hours=48)
    # 6 buckets for the hour plus one 40 days later; nothing pruned yet (not a day start).
    assert len(rows) == 7
    assert [p.samples for p in history.points] == [1]  # only the latest bucket is in 48 h
    assert history.until == EVENING + timedelta(days=40)
    ingest(engine, telemetry(node, datetime(2026, 1, 12, 0, 0, tzinfo=timezone.utc)))
    with Session(engine) as session:
        remaining = session.exec(select(PowerSample).where(PowerSample.node_id == node)).all()
    # The first bucket of a UTC day prunes what is older than 30 days.
    assert {r.bucket_start.date().isoformat() for r in remaining} == {"2026-01-10", "2026-01-12"}


def test_the_overview_puts_sites_that_will_not_last_the_night_first(engine: Engine) -> None:
    ingest(
        engine,
        birth("lhr-ok-0001"),
        telemetry("lhr-ok-0001", EVENING, autonomy_h=40.0),
        birth("lhr-risk-0001"),
        telemetry("lhr-risk-0001", EVENING, autonomy_h=9.0),  # 21:00; sunrise in ~9.7 h
        birth("lhr-mains-0002"),
        telemetry("lhr-mains-0002", EVENING, autonomy_h=2.0, mains_present=True),
    )
    with Session(engine) as session:
        overview = power_overview(session=session)
    assert overview.count == 3
    assert overview.at_risk == 1
    first = overview.data[0]
    assert (first.node_id, first.at_risk_tonight, first.night) == ("lhr-risk-0001", True, True)
    assert first.hours_until_sunrise is not None
    assert 9.3 < first.hours_until_sunrise < 10.2
    by_id = {i.node_id: i for i in overview.data}
    assert by_id["lhr-mains-0002"].reason == "on mains"
    assert not by_id["lhr-ok-0001"].at_risk_tonight


# -------------------------------------------------------------------- API

PASSWORDS = {"admin": "admin-password", "op": "operator-pw", "tech": "technician-pw"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("power-api"),
        broker_url=None,
        admin_username="admin",
        admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough",
    )
    with TestClient(create_app(settings)) as test_client:
        runtime: Runtime = test_client.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            for name, role in (("op", Role.OPERATOR), ("tech", Role.TECHNICIAN)):
                create_user(
                    session=session,
                    user_in=UserCreate(username=name, role=role, password=PASSWORDS[name]),
                )
        ingest(
            runtime.engine,
            birth("lhr-api-0001"),
            telemetry("lhr-api-0001", EVENING - timedelta(hours=3), autonomy_h=30.0),
            telemetry("lhr-api-0001", EVENING, autonomy_h=6.0, battery_soc=0.3),
            birth("lhr-api-0002", location=None),
        )
        yield test_client


def headers(client: TestClient, user: str) -> dict[str, str]:
    response = client.post(
        f"{API}/login/access-token", data={"username": user, "password": PASSWORDS[user]}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_api_overview_history_and_chart(client: TestClient) -> None:
    auth = headers(client, "op")
    overview = client.get(f"{API}/power/overview", headers=auth).json()
    assert overview["at_risk"] == 1
    assert overview["data"][0]["node_id"] == "lhr-api-0001"
    only = client.get(f"{API}/power/overview?at_risk_only=true", headers=auth).json()
    assert [i["node_id"] for i in only["data"]] == ["lhr-api-0001"]
    history = client.get(f"{API}/power/nodes/lhr-api-0001/history?hours=48", headers=auth)
    assert history.status_code == 200
    body = history.json()
    assert body["bucket_s"] == 600
    assert [p["autonomy_h"] for p in body["points"]] == [30.0, 6.0]
    chart = client.get(f"{API}/power/nodes/lhr-api-0001/chart.svg", headers=auth)
    assert chart.status_code == 200
    assert chart.headers["content-type"].startswith("image/svg+xml")
    svg = chart.text
    assert svg.startswith("<svg")
    assert 'data-points="2"' in svg
    assert 'class="night"' in svg
    assert 'class="soc"' in svg
    assert "target 8 h" in svg
    assert "<script" not in svg
    assert "style=" not in svg
    # A node without readings still gets an (empty) chart; one without location has no nights.
    empty = client.get(f"{API}/power/nodes/lhr-api-0002/chart.svg", headers=auth)
    assert empty.status_code == 200
    assert "No power readings" in empty.text


def test_api_refuses_bad_power_input(client: TestClient) -> None:
    auth = headers(client, "op")
    assert client.get(f"{API}/power/overview").status_code == 401
    assert client.get(f"{API}/power/nodes/nope-0001/history", headers=auth).status_code == 404
    assert client.get(f"{API}/power/nodes/nope-0001/chart.svg", headers=auth).status_code == 404
    for hours in ("0", "-5", "721", "lots"):
        response = client.get(f"{API}/power/nodes/lhr-api-0001/history?hours={hours}", headers=auth)
        assert response.status_code == 422, hours
    assert client.get(f"{API}/power/overview?limit=0", headers=auth).status_code == 422


def test_site_targets_are_set_by_admins_and_technicians_only(client: TestClient) -> None:
    url = f"{API}/power/sites/kp-hayatabad-02"
    denied = client.put(url, json={"autonomy_target_h": 24}, headers=headers(client, "op"))
    assert denied.status_code == 403
    tech = headers(client, "tech")
    made = client.put(url, json={"autonomy_target_h": 24}, headers=tech)
    assert made.status_code == 200, made.text
    assert made.json()["autonomy_target_h"] == 24
    assert made.json()["updated_by"] == "user:tech"
    assert client.get(url, headers=tech).json()["autonomy_target_h"] == 24
    listed = client.get(f"{API}/power/sites", headers=tech).json()
    assert "kp-hayatabad-02" in [s["site_id"] for s in listed["data"]]
    default = client.get(f"{API}/power/sites/never-set-01", headers=tech).json()
    assert default["autonomy_target_h"] == 8.0
    for body in (
        {"autonomy_target_h": 0},
        {"autonomy_target_h": -3},
        {"autonomy_target_h": 5000},
        {"autonomy_target_h": "eight"},
        {"autonomy_target_h": 8, "colour": "red"},
        {"max_battery_temp_c": 500},
    ):
        assert client.put(url, json=body, headers=tech).status_code == 422, body
    assert client.put(f"{API}/power/sites/Bad Site!", json={}, headers=tech).status_code == 422
