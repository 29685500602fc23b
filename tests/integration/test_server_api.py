"""The REST API with FastAPI's TestClient: login, tokens, bad input, transitions.

MQTT is off here (`broker_url=None`); alerts are put in the database with the
same data functions the ingest worker uses.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.auth import issue_token
from fleet_server.models import User, utcnow
from fleet_server.settings import Settings
from tests.support.api import API, login, make_alert, runtime_of


def test_login_gives_a_token_that_opens_the_api(client: TestClient) -> None:
    headers = login(client, "op")
    me = client.get(f"{API}/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["role"] == "operator"
    listing = client.get(f"{API}/alerts", headers=headers)
    assert listing.status_code == 200
    assert set(listing.json()) == {"data", "count"}


def test_a_wrong_password_is_refused(client: TestClient) -> None:
    response = client.post(
        f"{API}/login/access-token", data={"username": "op", "password": "nope-nope"}
    )
    assert response.status_code == 401
    assert "incorrect" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer a.b"}],
    ids=["missing", "garbage", "bad-signature"],
)
def test_requests_without_a_valid_token_get_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get(f"{API}/alerts", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_expired_token_gets_401(client: TestClient) -> None:
    runtime = runtime_of(client)
    with Session(runtime.engine) as session:
        user = session.exec(select(User).where(User.username == "op")).one()
    token, _ = issue_token(
        user=user, key=runtime.signing_key, ttl_s=60, now=utcnow() - timedelta(hours=1)
    )
    response = client.get(f"{API}/alerts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid token: token expired"


def test_an_operator_moves_an_alert_along_its_lifecycle(client: TestClient) -> None:
    headers = login(client, "op")
    alert_id = make_alert(client, node="lhr-api-lifecycle")
    for step in ("acknowledged", "dispatched", "on_scene", "resolved", "closed"):
        response = client.post(
            f"{API}/alerts/{alert_id}/transitions", json={"to": step, "note": "ok"},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 201, response.text
        assert response.json()["actor"] == "user:op"
    alert = client.get(f"{API}/alerts/{alert_id}", headers=headers).json()
    assert alert["state"] == "closed"
    history = client.get(f"{API}/alerts/{alert_id}/transitions", headers=headers).json()
    assert [t["to_state"] for t in history["data"]] == [
        "new", "acknowledged", "dispatched", "on_scene", "resolved", "closed",
    ]  # fmt: skip
    closed = client.get(
        f"{API}/alerts", params={"state": "closed", "node_id": "lhr-api-lifecycle"},
        headers=headers,
    ).json()  # fmt: skip
    assert [a["id"] for a in closed["data"]] == [alert_id]


def test_an_illegal_transition_is_409_naming_the_allowed_states(client: TestClient) -> None:
    headers = login(client, "op")
    alert_id = make_alert(client)
    response = client.post(
        f"{API}/alerts/{alert_id}/transitions", json={"to": "closed"}, headers=headers
    )
    assert response.status_code == 409
    assert "cannot go from 'new' to 'closed'" in response.json()["detail"]
    assert "acknowledged" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/alerts/{id}/transitions", {"to": "teleported"}, 422),
        ("post", "/alerts/{id}/transitions", {}, 422),
        ("post", "/alerts/{id}/transitions", {"to": "acknowledged", "note": "x" * 1001}, 422),
        ("post", "/alerts/NOPE/transitions", {"to": "acknowledged"}, 404),
        ("get", "/alerts/NOPE", None, 404),
        ("get", "/alerts?state=sleeping", None, 422),
        ("get", "/alerts?limit=0", None, 422),
        ("get", "/nodes/no-such-node", None, 404),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message(
    client: TestClient, method: str, path: str, body: dict[str, str] | None, status: int
) -> None:
    headers = login(client, "op")
    alert_id = make_alert(client)
    url = API + path.replace("{id}", alert_id)
    response = client.request(method.upper(), url, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_an_auditor_can_read_but_not_transition(client: TestClient) -> None:
    headers = login(client, "audit")
    alert_id = make_alert(client)
    assert client.get(f"{API}/alerts/{alert_id}", headers=headers).status_code == 200
    response = client.post(
        f"{API}/alerts/{alert_id}/transitions", json={"to": "acknowledged"}, headers=headers
    )
    assert response.status_code == 403
    assert "auditor" in response.json()["detail"]


def test_nodes_metrics_and_rejections_answer(client: TestClient) -> None:
    headers = login(client, "admin")
    make_alert(client, node="lhr-api-02")
    nodes = client.get(f"{API}/nodes", headers=headers).json()
    assert "lhr-api-02" in [n["node_id"] for n in nodes["data"]]
    # A press proves the node's connection is alive (docs/fleet-server.md, Presence).
    assert client.get(f"{API}/nodes/lhr-api-02", headers=headers).json()["online"] is True
    metrics = client.get(f"{API}/metrics/response-times", headers=headers).json()
    assert metrics["data"][0]["stages"]["press_to_received"]["count"] >= 1
    rejections = client.get(f"{API}/ingest/rejections", headers=headers).json()
    assert rejections["total"] == 0
    health = client.get("/healthz").json()
    assert (health["status"], health["mqtt"]) == ("ok", "disabled")


def test_default_secrets_are_refused_outside_development(tmp_path: Path) -> None:
    # pydantic wraps the SettingsError raised by the validator in a ValidationError.
    with pytest.raises(ValueError, match="NIGEHBAAN_SECRET_KEY"):
        Settings(env="prod", data_dir=tmp_path)
    with pytest.raises(ValueError, match="ADMIN_PASSWORD"):
        Settings(env="prod", secret_key="x" * 32, admin_password="admin")
    settings = Settings.from_env(
        {"NIGEHBAAN_ENV": "prod", "NIGEHBAAN_SECRET_KEY": "y" * 32, "NIGEHBAAN_PORT": "9000"}
    )
    assert settings.port == 9000
