"""Scope on users and API tokens, and the stated-purpose gate (docs/access.md).

An admin gives a user an agency and districts (and takes them back to every
district); an API token for another agency's system is scoped, expires, is
listed without its secret and stops working the moment it is revoked; and a
view of evidence-like data needs a stated purpose and is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.api.deps import SessionDep
from fleet_server.api.scope import PurposeDep, ScopeDep
from fleet_server.app import create_app
from fleet_server.models import Alert, ApiToken, DataAccess, Node, utcnow
from fleet_server.runtime import Runtime
from fleet_server.scope import record_access
from fleet_server.settings import Settings

API = "/api/v1"
PASSWORD = "scope-token-password"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("scope-tokens"),
        broker_url=None,
        admin_username="admin",
        admin_password=PASSWORD,
        secret_key="test-secret-key-that-is-long-enough",
    )
    app = create_app(settings)

    # Evidence-like data has no route yet (docs/access.md, "Stated purpose"): this
    # stand-in is what such a route looks like: scope first, then record, then data.
    @app.get("/test-only/alert-snapshot/{alert_id}")
    def snapshot(
        session: SessionDep, scope: ScopeDep, purpose: PurposeDep, alert_id: str
    ) -> dict[str, str]:
        alert = session.get(Alert, alert_id)
        if alert is None or not scope.allows(alert.district):
            raise HTTPException(404, "no alert")
        record_access(
            session=session, actor="test", agency=scope.agency, resource="alert_snapshot",
            object_id=alert_id, purpose=purpose,
        )  # fmt: skip
        return {"alert": alert_id}

    with TestClient(app) as test_client:
        runtime: Runtime = test_client.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            session.add(Node(node_id="lhr-g-01", district="Gulberg"))
            session.add(Node(node_id="khi-c-01", district="Clifton"))
            session.add(
                Alert(
                    id="A" * 26, node_id="lhr-g-01", type="panic", severity="P1", district="Gulberg"
                )
            )
            session.add(
                Alert(
                    id="B" * 26, node_id="khi-c-01", type="panic", severity="P1", district="Clifton"
                )
            )
            session.commit()
        yield test_client


def _admin(client: TestClient) -> dict[str, str]:
    answer = client.post(
        f"{API}/login/access-token", data={"username": "admin", "password": PASSWORD}
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_scopes_a_user_and_the_user_sees_only_that(client: TestClient) -> None:
    admin = _admin(client)
    made = client.post(
        f"{API}/users",
        json={"username": "g-op", "role": "operator", "password": PASSWORD,
              "agency": "PSCA", "districts": ["Gulberg"]},
        headers=admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["districts"] == ["Gulberg"]
    assert made.json()["agency"] == "PSCA"
    login = client.post(
        f"{API}/login/access-token", data={"username": "g-op", "password": PASSWORD}
    )
    op = _bearer(login.json()["access_token"])
    assert [a["id"] for a in client.get(f"{API}/alerts", headers=op).json()["data"]] == ["A" * 26]
    me = client.get(f"{API}/users/me", headers=op).json()
    assert me["districts"] == ["Gulberg"]
    # Moved to Clifton: the same token now sees Clifton (the row is read per request).
    user_id = made.json()["id"]
    moved = client.patch(f"{API}/users/{user_id}", json={"districts": ["Clifton"]}, headers=admin)
    assert moved.status_code == 200
    assert moved.json()["districts"] == ["Clifton"]
    assert [a["id"] for a in client.get(f"{API}/alerts", headers=op).json()["data"]] == ["B" * 26]
    every = client.patch(f"{API}/users/{user_id}", json={"all_districts": True}, headers=admin)
    assert every.json()["districts"] is None
    assert client.get(f"{API}/alerts", headers=op).json()["count"] == 2


def test_an_api_token_is_scoped_listed_without_its_secret_and_revocable(client: TestClient) -> None:
    admin = _admin(client)
    made = client.post(
        f"{API}/api-tokens",
        json={"name": "ctd-dashboard", "agency": "CTD", "role": "auditor",
              "districts": ["Clifton"], "ttl_days": 30},
        headers=admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("ngb_")
    system = _bearer(token)
    alerts = client.get(f"{API}/alerts", headers=system).json()
    assert [a["id"] for a in alerts["data"]] == ["B" * 26]
    assert alerts["count"] == 1
    assert client.get(f"{API}/alerts/{'A' * 26}", headers=system).status_code == 404
    assert client.get(f"{API}/users/me", headers=system).json()["username"] == "token:ctd-dashboard"
    # An auditor token cannot act, and no token manages tokens or users.
    assert (
        client.post(
            f"{API}/alerts/{'B' * 26}/transitions", json={"to": "acknowledged"}, headers=system
        ).status_code
        == 403
    )
    assert client.get(f"{API}/api-tokens", headers=system).status_code == 403
    listed = client.get(f"{API}/api-tokens", headers=admin).json()
    row = next(t for t in listed["data"] if t["name"] == "ctd-dashboard")
    assert "token" not in row
    assert token not in str(listed)
    assert row["last_used_at"] is not None
    assert row["revoked_at"] is None
    revoked = client.post(f"{API}/api-tokens/{row['id']}/revoke", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get(f"{API}/alerts", headers=system).status_code == 401
    assert client.post(f"{API}/api-tokens/999999/revoke", headers=admin).status_code == 404


def test_an_expired_api_token_is_refused_and_an_admin_token_is_never_issued(
    client: TestClient,
) -> None:
    admin = _admin(client)
    made = client.post(
        f"{API}/api-tokens",
        json={"name": "short", "agency": "PHP", "role": "operator"},
        headers=admin,
    ).json()
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine) as session:
        row = session.get(ApiToken, made["id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()
    answer = client.get(f"{API}/alerts", headers=_bearer(made["token"]))
    assert answer.status_code == 401
    assert "expired" in answer.text
    refused = client.post(
        f"{API}/api-tokens", json={"name": "root", "agency": "X", "role": "admin"}, headers=admin
    )
    assert refused.status_code == 422
    assert client.get(f"{API}/alerts", headers=_bearer("ngb_made-up")).status_code == 401


def test_evidence_like_data_needs_a_stated_purpose_and_every_view_is_recorded(
    client: TestClient,
) -> None:
    admin = _admin(client)
    url = f"/test-only/alert-snapshot/{'A' * 26}"
    assert client.get(url, headers=admin).status_code == 428
    assert client.get(url, headers={**admin, "X-Purpose": "because"}).status_code == 422
    seen = client.get(url, headers={**admin, "X-Purpose": "fir:123/2026"})
    assert seen.status_code == 200
    clifton = client.post(
        f"{API}/api-tokens",
        json={"name": "khi", "agency": "SSU", "role": "auditor", "districts": ["Clifton"]},
        headers=admin,
    ).json()["token"]
    outside = client.get(url, headers={**_bearer(clifton), "X-Purpose": "note:looking around town"})
    assert outside.status_code == 404
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine) as session:
        rows = session.exec(select(DataAccess)).all()
    assert [(r.object_id, r.purpose_kind, r.purpose_ref) for r in rows] == [
        ("A" * 26, "fir", "123/2026")
    ], "the refused views are not recorded as views"
