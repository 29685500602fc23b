"""The fleet map's API: the whole fleet as columns, states for refreshes, district outlines.

In-process (TestClient) against SQLite, with a seeded fleet of Lahore's towns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.console.fleet_pages import tile_origin
from fleet_server.fleet_map import STATES, convex_hull
from fleet_server.models import Node, Role, UserCreate
from fleet_server.settings import Settings
from simulators.console_fleet import TOWNS, SeededFleet, seed_fleet

API = "/api/v1"
TILES = "https://tiles.example.pk:8443/{z}/{x}/{y}.png"


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("map-api"),
        broker_url=None,
        admin_username="admin",
        admin_password="admin-password",
        secret_key="test-secret-key-that-is-long-enough",
        console_map_tile_url=TILES,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def fleet(app_client: TestClient) -> SeededFleet:
    engine = app_client.app.state.runtime.engine  # type: ignore[attr-defined]
    seeded = seed_fleet(engine, nodes=250, seed=11, prefix="api", closed_alerts=50)
    with Session(engine) as session:
        session.add(Node(node_id="api-nowhere", district="lahore-gulberg", online=True))
        session.add(Node(node_id="api-retired", lat=31.5, lon=74.3, lifecycle="decommissioned"))
        create_user(
            session=session,
            user_in=UserCreate(username="op-map-api", role=Role.OPERATOR, password="operator-pw"),
        )
        create_user(
            session=session,
            user_in=UserCreate(
                username="op-dha", role=Role.OPERATOR, password="operator-pw",
                districts=["lahore-dha"],
            ),
        )  # fmt: skip
        session.commit()
    return seeded


def _auth(
    client: TestClient, user: str = "op-map-api", password: str = "operator-pw"
) -> dict[str, str]:
    response = client.post(
        f"{API}/login/access-token", data={"username": user, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_the_map_is_every_positioned_node_as_columns_with_its_state(
    app_client: TestClient, fleet: SeededFleet
) -> None:
    body = app_client.get(f"{API}/fleet-map", headers=_auth(app_client)).json()

    nodes = body["nodes"]
    assert body["states"] == list(STATES)
    assert len(nodes["id"]) == len(fleet.node_ids)  # not the one without a position, nor retired
    assert {len(nodes[k]) for k in ("id", "lat", "lon", "state", "district")} == {len(nodes["id"])}
    assert body["without_position"] == 1
    state = {i: body["states"][s] for i, s in zip(nodes["id"], nodes["state"], strict=True)}
    assert {n for n, s in state.items() if s == "offline"} == set(fleet.offline)
    assert {n for n, s in state.items() if s == "alert"} == set(fleet.alerting)
    assert {n for n, s in state.items() if s == "power_risk"} == set(fleet.power_risk)
    assert {n for n, s in state.items() if s == "lagging"} == set(fleet.lagging)
    assert body["counts"]["online"] == len(fleet.node_ids) - len(
        {*fleet.offline, *fleet.alerting, *fleet.power_risk, *fleet.lagging}
    )
    assert body["baseline_firmware"] == "1.4.2"
    assert body["tile_url"] == TILES
    assert sorted(body["districts"]) == sorted(name for name, *_ in TOWNS)


def test_each_district_outline_is_the_hull_of_its_nodes(
    app_client: TestClient, fleet: SeededFleet
) -> None:
    body = app_client.get(f"{API}/fleet-map", headers=_auth(app_client)).json()
    nodes = body["nodes"]
    assert {o["district"] for o in body["outlines"]} == set(body["districts"])
    for outline in body["outlines"]:
        code = body["districts"].index(outline["district"])
        points = [
            (lat, lon)
            for lat, lon, d in zip(nodes["lat"], nodes["lon"], nodes["district"], strict=True)
            if d == code
        ]
        assert outline["nodes"] == len(points)
        assert [tuple(p) for p in outline["ring"]] == convex_hull(points)


def test_a_hull_keeps_only_the_corners() -> None:
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    inside = [(0.5, 0.5), (0.2, 0.7), (0.5, 0.0)]
    assert sorted(convex_hull(square + inside)) == sorted(square)
    assert convex_hull([(1.0, 1.0), (1.0, 1.0)]) == [(1.0, 1.0)]


def test_states_follow_the_full_loads_order_and_change_when_a_node_goes_offline(
    app_client: TestClient, fleet: SeededFleet
) -> None:
    headers = _auth(app_client)
    full = app_client.get(f"{API}/fleet-map", headers=headers).json()
    quiet = next(
        n for n in fleet.node_ids
        if n not in {*fleet.offline, *fleet.alerting, *fleet.power_risk, *fleet.lagging}
    )  # fmt: skip
    engine = app_client.app.state.runtime.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        node = session.get(Node, quiet)
        assert node is not None
        node.online = False
        session.add(node)
        session.commit()
    try:
        states = app_client.get(f"{API}/fleet-map/states", headers=headers).json()
        assert states["order_hash"] == full["order_hash"]
        i = full["nodes"]["id"].index(quiet)
        assert full["states"][states["state"][i]] == "offline"
        assert states["counts"]["offline"] == full["counts"]["offline"] + 1
    finally:
        with Session(engine) as session:
            node = session.get(Node, quiet)
            assert node is not None
            node.online = True
            session.add(node)
            session.commit()


def test_the_map_needs_a_signed_in_user(app_client: TestClient) -> None:
    assert app_client.get(f"{API}/fleet-map").status_code == 401
    assert app_client.get(f"{API}/fleet-map/states").status_code == 401


def test_the_map_page_allows_images_from_the_configured_tile_server_only(
    app_client: TestClient,
) -> None:
    policy = app_client.get("/console/map").headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://tiles.example.pk:8443;" in policy
    assert "connect-src 'self'" in policy
    other = app_client.get("/console/response-times").headers["Content-Security-Policy"]
    assert "tiles.example.pk" not in other
    assert tile_origin(None) is None
    assert tile_origin("javascript:alert(1)") is None


def test_the_vendored_map_library_is_served_with_its_licence_beside_it(
    app_client: TestClient,
) -> None:
    script = app_client.get("/console/static/vendor/leaflet/leaflet.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert app_client.get("/console/static/vendor/leaflet/..%2F..%2Fcommon.js").status_code == 404
    vendor = Path(__file__).resolve().parents[2] / "fleet_server/console/static/vendor"
    for package in ("leaflet", "markercluster"):
        assert (vendor / package / "LICENSE.txt").is_file()
    assert "leaflet 1.9.4" in (vendor / "VERSIONS").read_text(encoding="utf-8")


def test_a_district_operator_sees_only_their_districts_nodes_and_outline(
    app_client: TestClient, fleet: SeededFleet
) -> None:
    headers = _auth(app_client, "op-dha")
    body = app_client.get(f"{API}/fleet-map", headers=headers).json()
    assert body["districts"] == ["lahore-dha"]
    assert [o["district"] for o in body["outlines"]] == ["lahore-dha"]
    assert len(body["nodes"]["id"]) == len(fleet.node_ids) // len(TOWNS)
    states = app_client.get(f"{API}/fleet-map/states", headers=headers).json()
    assert len(states["state"]) == len(body["nodes"]["id"])
    elsewhere = next(n for n in fleet.node_ids if n not in body["nodes"]["id"])
    detail = app_client.get(f"{API}/node-detail/{elsewhere}", headers=headers)
    assert detail.status_code == 404
    assert detail.json() == {"detail": "node not found"}
    report = app_client.get(f"{API}/response-times/report", headers=headers).json()
    assert [row["district"] for row in report["figures"]["data"]] == ["lahore-dha"]
