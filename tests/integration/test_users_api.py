"""Fleet admins manage users through the API: list, create, change role, disable, reset passwords.

Stories: an admin creates a technician, resets their password, and the old
password stops working; a disabled user's token stops working at once and
they cannot sign in; an operator is refused every user-management call; the
last active admin can be neither demoted nor disabled, and no admin can
disable their own account.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import API, login


def _token(client: TestClient, username: str, password: str) -> int | dict[str, str]:
    response = client.post(
        f"{API}/login/access-token", data={"username": username, "password": password}
    )
    if response.status_code != 200:
        return int(response.status_code)
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _create(client: TestClient, username: str, role: str, password: str) -> int:
    response = client.post(
        f"{API}/users",
        json={"username": username, "role": role, "password": password},
        headers=login(client, "admin"),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_an_admin_lists_users_by_name(client: TestClient) -> None:
    response = client.get(f"{API}/users", headers=login(client, "admin"))
    assert response.status_code == 200, response.text
    names = [u["username"] for u in response.json()["data"]]
    assert {"admin", "op", "audit"} <= set(names)
    assert names == sorted(names)
    assert response.json()["count"] == len(names)
    assert all("password_hash" not in u for u in response.json()["data"])


def test_an_operator_is_refused_every_user_management_call(client: TestClient) -> None:
    headers = login(client, "op")
    admin_id = client.get(f"{API}/users/me", headers=login(client, "admin")).json()["id"]
    calls = [
        client.get(f"{API}/users", headers=headers),
        client.post(
            f"{API}/users",
            json={"username": "sneaky", "role": "admin", "password": "sneaky-password"},
            headers=headers,
        ),
        client.patch(f"{API}/users/{admin_id}", json={"is_active": False}, headers=headers),
        client.post(
            f"{API}/users/{admin_id}/password", json={"password": "taken-over-1"}, headers=headers
        ),
    ]
    assert [c.status_code for c in calls] == [403, 403, 403, 403]
    assert client.get(f"{API}/users/me", headers=login(client, "admin")).status_code == 200


def test_a_reset_password_replaces_the_old_one(client: TestClient) -> None:
    user_id = _create(client, "tech-reset", "technician", "first-password")
    assert isinstance(_token(client, "tech-reset", "first-password"), dict)
    response = client.post(
        f"{API}/users/{user_id}/password",
        json={"password": "second-password"},
        headers=login(client, "admin"),
    )
    assert response.status_code == 204, response.text
    assert _token(client, "tech-reset", "first-password") == 401
    assert isinstance(_token(client, "tech-reset", "second-password"), dict)
    short = client.post(
        f"{API}/users/{user_id}/password",
        json={"password": "short"},
        headers=login(client, "admin"),
    )
    assert short.status_code == 422


def test_a_disabled_user_is_out_at_once_and_back_when_enabled(client: TestClient) -> None:
    user_id = _create(client, "op-leaver", "operator", "leaver-password")
    headers = _token(client, "op-leaver", "leaver-password")
    assert isinstance(headers, dict)
    assert client.get(f"{API}/alerts", headers=headers).status_code == 200
    disabled = client.patch(
        f"{API}/users/{user_id}", json={"is_active": False}, headers=login(client, "admin")
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["is_active"] is False
    assert client.get(f"{API}/alerts", headers=headers).status_code == 401
    assert _token(client, "op-leaver", "leaver-password") == 401
    enabled = client.patch(
        f"{API}/users/{user_id}", json={"is_active": True}, headers=login(client, "admin")
    )
    assert enabled.json()["is_active"] is True
    assert client.get(f"{API}/alerts", headers=headers).status_code == 200


def test_a_role_change_takes_effect_on_the_next_request(client: TestClient) -> None:
    user_id = _create(client, "tech-promoted", "technician", "promoted-password")
    headers = _token(client, "tech-promoted", "promoted-password")
    assert isinstance(headers, dict)
    assert client.get(f"{API}/users", headers=headers).status_code == 403
    changed = client.patch(
        f"{API}/users/{user_id}", json={"role": "admin"}, headers=login(client, "admin")
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "admin"
    assert client.get(f"{API}/users", headers=headers).status_code == 200
    bad = client.patch(
        f"{API}/users/{user_id}", json={"role": "superuser"}, headers=login(client, "admin")
    )
    assert bad.status_code == 422
    back = client.patch(
        f"{API}/users/{user_id}", json={"role": "technician"}, headers=login(client, "admin")
    )
    assert back.json()["role"] == "technician"


def test_the_last_active_admin_cannot_be_demoted_or_disabled(client: TestClient) -> None:
    admin = login(client, "admin")
    users = client.get(f"{API}/users", headers=admin).json()["data"]
    admins = [u for u in users if u["role"] == "admin" and u["is_active"]]
    assert [u["username"] for u in admins] == ["admin"]
    admin_id = admins[0]["id"]
    demote = client.patch(f"{API}/users/{admin_id}", json={"role": "operator"}, headers=admin)
    assert demote.status_code == 409, demote.text
    assert "last active admin" in demote.json()["detail"]
    disable = client.patch(f"{API}/users/{admin_id}", json={"is_active": False}, headers=admin)
    assert disable.status_code == 409
    assert client.get(f"{API}/users/me", headers=admin).json()["role"] == "admin"

    # With a second admin, the first may step down, but not switch itself off.
    second_id = _create(client, "admin-two", "admin", "second-admin-pw")
    self_off = client.patch(f"{API}/users/{admin_id}", json={"is_active": False}, headers=admin)
    assert self_off.status_code == 409
    assert "your own account" in self_off.json()["detail"]
    second = _token(client, "admin-two", "second-admin-pw")
    assert isinstance(second, dict)
    step_down = client.patch(f"{API}/users/{second_id}", json={"role": "operator"}, headers=second)
    assert step_down.status_code == 200, step_down.text
    assert client.get(f"{API}/users", headers=second).status_code == 403


def test_an_unknown_user_is_404(client: TestClient) -> None:
    admin = login(client, "admin")
    assert (
        client.patch(f"{API}/users/99999", json={"role": "operator"}, headers=admin).status_code
        == 404
    )
    assert (
        client.post(
            f"{API}/users/99999/password", json={"password": "whatever-pw"}, headers=admin
        ).status_code
        == 404
    )
