"""What the console's filters and history view ask of the alerts API.

The story: a control room with a busy night behind it wants the closed alerts
(resolved, false alarm, …) a page at a time, narrowed by type, severity and
district, and each alert's history with the reason an operator gave.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Alert, AlertState, utcnow
from tests.support.api import API, login, make_alert, runtime_of

CLOSED = ["resolved", "closed", "false_alarm", "duplicate", "test"]


def _seed(client: TestClient, node_prefix: str) -> list[Alert]:
    """Twelve alerts on one district: every state, two types, two severities."""
    start = utcnow() - timedelta(hours=2)
    rows = []
    states = [str(s) for s in AlertState] + ["resolved", "false_alarm", "new"]
    for number, state in enumerate(states):
        rows.append(
            Alert(
                node_id=f"{node_prefix}-{number:02d}",
                type="panic" if number % 2 == 0 else "tamper",
                severity="P1" if number % 2 == 0 else "P3",
                state=state,
                district=f"{node_prefix}-district",
                received_at=start + timedelta(minutes=number),
            )
        )
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()
    return rows


def _ids(response: object) -> list[str]:
    body = response.json()  # type: ignore[attr-defined]
    return [alert["id"] for alert in body["data"]]


def test_the_history_asks_for_every_closed_state_at_once_a_page_at_a_time(
    client: TestClient,
) -> None:
    rows = _seed(client, "hist")
    headers = login(client, "op")
    query = "&".join(f"state={s}" for s in CLOSED) + "&district=hist-district"
    closed = sorted(
        (r for r in rows if r.state in CLOSED), key=lambda r: r.received_at, reverse=True
    )

    first = client.get(f"{API}/alerts?{query}&limit=3", headers=headers)
    second = client.get(f"{API}/alerts?{query}&limit=3&offset=3", headers=headers)

    assert first.status_code == 200, first.text
    assert first.json()["count"] == len(closed) == 7
    assert _ids(first) == [r.id for r in closed[:3]]
    assert _ids(second) == [r.id for r in closed[3:6]]


def test_the_queue_narrows_by_type_severity_and_district(client: TestClient) -> None:
    rows = _seed(client, "narrow")
    headers = login(client, "op")

    tamper = client.get(f"{API}/alerts?type=tamper&district=narrow-district", headers=headers)
    p1_open = client.get(
        f"{API}/alerts?severity=P1&state=new&state=acknowledged&district=narrow-district",
        headers=headers,
    )

    assert {a["type"] for a in tamper.json()["data"]} == {"tamper"}
    assert tamper.json()["count"] == sum(1 for r in rows if r.type == "tamper")
    expected = {r.id for r in rows if r.severity == "P1" and r.state in ("new", "acknowledged")}
    assert set(_ids(p1_open)) == expected


def test_a_history_offset_past_the_bound_is_refused_not_a_server_error(
    client: TestClient,
) -> None:
    headers = login(client, "op")
    response = client.get(f"{API}/alerts?offset=9223372036854775808", headers=headers)
    assert response.status_code == 422


def test_the_reason_given_for_a_false_alarm_is_in_the_alerts_history(
    client: TestClient,
) -> None:
    alert_id = make_alert(client, node="lhr-reason-01")
    headers = login(client, "op")
    reason = "Children playing with the button; checked on camera 3"

    made = client.post(
        f"{API}/alerts/{alert_id}/transitions",
        json={"to": "false_alarm", "note": reason},
        headers=headers,
    )
    history = client.get(f"{API}/alerts/{alert_id}/transitions", headers=headers)

    assert made.status_code == 201, made.text
    last = history.json()["data"][-1]
    assert (last["to_state"], last["note"], last["actor"]) == ("false_alarm", reason, "user:op")
