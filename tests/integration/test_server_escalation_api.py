"""Admins set escalation ladders through the API; bad ladders are refused with a reason."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import API, login, make_alert


def test_an_admin_replaces_the_panic_ladder(client: TestClient) -> None:
    ladder = {
        "alert_type": "panic",
        "levels": [{"after_s": 0, "recipient": "zone_operator"}, {"after_s": 45}],
        "ack_timeout_s": 60,
        "repeat_every_s": 120,  # a P1 ladder must repeat (issue 11)
    }
    response = client.put(
        f"{API}/escalation-policies/panic", json=ladder, headers=login(client, "admin")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [lv["after_s"] for lv in body["levels"]] == [0, 45]
    listed = client.get(f"{API}/escalation-policies", headers=login(client, "op")).json()
    assert any(p["name"] == "panic" and p["ack_timeout_s"] == 60 for p in listed)


def test_an_operator_may_not_change_a_ladder(client: TestClient) -> None:
    ladder = {"alert_type": "panic", "levels": [{"after_s": 0}]}
    response = client.put(
        f"{API}/escalation-policies/panic", json=ladder, headers=login(client, "op")
    )
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_levels_out_of_order_are_refused(client: TestClient) -> None:
    ladder = {"alert_type": "tamper", "levels": [{"after_s": 30}, {"after_s": 0}]}
    response = client.put(
        f"{API}/escalation-policies/tamper", json=ladder, headers=login(client, "admin")
    )
    assert response.status_code == 422
    assert "ascending" in response.json()["detail"]


def test_a_second_policy_for_the_same_type_is_a_conflict(client: TestClient) -> None:
    ladder = {"alert_type": "panic", "levels": [{"after_s": 0}]}
    response = client.put(
        f"{API}/escalation-policies/panic-two", json=ladder, headers=login(client, "admin")
    )
    assert response.status_code == 409
    assert "already covers" in response.json()["detail"]


def test_unknown_fields_and_bad_recipients_are_refused(client: TestClient) -> None:
    headers = login(client, "admin")
    extra = {"alert_type": "panic", "levels": [{"after_s": 0, "colour": "red"}]}
    assert (
        client.put(f"{API}/escalation-policies/panic", json=extra, headers=headers).status_code
        == 422
    )
    bad = {"alert_type": "panic", "levels": [{"after_s": 0, "recipient": "Zone Op!"}]}
    assert (
        client.put(f"{API}/escalation-policies/panic", json=bad, headers=headers).status_code == 422
    )
    empty = {"alert_type": "panic", "levels": []}
    assert (
        client.put(f"{API}/escalation-policies/panic", json=empty, headers=headers).status_code
        == 422
    )


def test_an_alert_shows_its_escalation_steps(client: TestClient) -> None:
    alert_id = make_alert(client, node="lhr-esc-01")
    steps = client.get(f"{API}/alerts/{alert_id}/escalations", headers=login(client, "audit"))
    assert steps.status_code == 200
    assert steps.json()[0]["level"] == 0
    missing = client.get(f"{API}/alerts/NOPE/escalations", headers=login(client, "audit"))
    assert missing.status_code == 404
