"""An admin's escalation policy change can never silence a panic (issue 11, item 1).

The issue's story: `PUT /escalation-policies/panic` with a typo in
`alert_type` (or an empty one, `after_s: false`, `repeat_every_s: 5e-324`)
was accepted, new panics fell to the default ladder, open level-3 panics were
"repeated" down to level 1 with no next escalation, and stayed silent even
after the policy was put back, with nothing recording who changed it. These
stories check each part against the API, with escalation driven through the
real `escalate_due` at chosen times (the alert's own `received_at` plus the
ladder's seconds) rather than by waiting.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.alerting import escalate_due, load_policies, set_policy
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, AlertEscalation, utcnow
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import TamperEvent
from tests.support.api import API, login, make_alert, runtime_of

PANIC_LADDER: dict[str, Any] = {
    "alert_type": "panic",
    "repeat_every_s": 300,
    "levels": [
        {"after_s": 0, "recipient": "zone_operator"},
        {"after_s": 30, "recipient": "supervisor"},
        {"after_s": 90, "recipient": "duty_officer"},
        {"after_s": 300, "recipient": "command_head"},
    ],
}


def put(client: TestClient, name: str, body: dict[str, Any]) -> Any:
    return client.put(
        f"{API}/escalation-policies/{name}", json=body, headers=login(client, "admin")
    )


def alert(client: TestClient, alert_id: str) -> Alert:
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        row = session.get(Alert, alert_id)
        assert row is not None
        return row


def tick(client: TestClient, at: datetime) -> None:
    """One pass of the escalation timer at time `at`."""
    with Session(runtime_of(client).engine) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        escalate_due(session=session, now=at, policies=policies)
        session.commit()


def climb(client: TestClient, alert_id: str, *, to_level: int, limit_s: float = 3600) -> None:
    """Run the timer at each due time until the alert stands at `to_level`."""
    for _ in range(20):
        row = alert(client, alert_id)
        if row.escalation_level == to_level:
            return
        assert row.next_escalation_at is not None, f"alert stuck at level {row.escalation_level}"
        assert row.next_escalation_at <= row.received_at + timedelta(seconds=limit_s)
        tick(client, row.next_escalation_at)
    raise AssertionError(f"alert never reached level {to_level}")


def reasons(client: TestClient, alert_id: str) -> list[tuple[int, str, str]]:
    with Session(runtime_of(client).engine) as session:
        rows = session.exec(
            select(AlertEscalation)
            .where(AlertEscalation.alert_id == alert_id)
            .order_by(col(AlertEscalation.id))  # the virtual ticks run ahead of the clock
        ).all()
        return [(r.level, r.queue, r.reason) for r in rows]


def test_a_typo_or_nonsense_in_the_panic_policy_is_refused_and_panics_keep_escalating(
    client: TestClient,
) -> None:
    one_level = [{"after_s": 0, "recipient": "zone_operator"}]
    refused = [
        {**PANIC_LADDER, "alert_type": "pnaic"},
        {**PANIC_LADDER, "alert_type": ""},
        {**PANIC_LADDER, "alert_type": "PANIC"},
        {**PANIC_LADDER, "levels": [{"after_s": False, "recipient": "zone_operator"}]},
        {**PANIC_LADDER, "levels": [{"after_s": "0", "recipient": "zone_operator"}]},
        {**PANIC_LADDER, "repeat_every_s": 5e-324},
        {**PANIC_LADDER, "repeat_every_s": True},
        {**PANIC_LADDER, "ack_timeout_s": 0.5},
        {"alert_type": "panic", "levels": one_level},  # a P1 ladder that stops
        {**PANIC_LADDER, "levels": [{"after_s": 5, "recipient": "zone_operator"}]},
        {**PANIC_LADDER, "levels": [{"after_s": 0}, {"after_s": 60}, {"after_s": 30}]},
    ]
    for body in refused:
        response = put(client, "panic", body)
        assert response.status_code == 422, (body, response.text)

    listed = client.get(f"{API}/escalation-policies", headers=login(client, "op")).json()
    (panic,) = [p for p in listed if p["name"] == "panic"]
    assert panic["alert_type"] == "panic"
    assert [lv["after_s"] for lv in panic["levels"]] == [0, 30, 90, 300]

    alert_id = make_alert(client, node="lhr-typo-01")
    climb(client, alert_id, to_level=3)
    top = alert(client, alert_id)
    assert top.queue == "command_head"
    assert top.next_escalation_at is not None  # the top repeats


def test_an_open_panic_at_level_three_keeps_escalating_when_its_ladder_is_shortened_and_put_back(
    client: TestClient,
) -> None:
    alert_id = make_alert(client, node="lhr-story-01")
    climb(client, alert_id, to_level=3)

    short = {"alert_type": "panic", "repeat_every_s": 60, "levels": [{"after_s": 0}]}
    assert put(client, "panic", short).status_code == 200
    clamped = alert(client, alert_id)
    # Clamped to the new top at once, due now so its recipient hears about it.
    assert clamped.escalation_level == 0
    assert clamped.next_escalation_at is not None
    # The app's own timer loop runs beside the test and may already have repeated
    # the now-due step: the change's record must follow the climb, whatever comes after.
    steps = reasons(client, alert_id)
    last_climb = max(i for i, step in enumerate(steps) if step[0] == 3)
    assert steps[last_climb + 1] == (0, "catch_all", "policy_changed")

    tick(client, utcnow() + timedelta(seconds=1))
    repeated = alert(client, alert_id)
    assert repeated.escalation_level == 0
    assert repeated.next_escalation_at is not None

    assert put(client, "panic", PANIC_LADDER).status_code == 200
    restored = alert(client, alert_id)
    assert restored.next_escalation_at is not None, "put back, but the alert has no next step"
    climb(client, alert_id, to_level=3)
    assert alert(client, alert_id).queue == "command_head"


def tamper_alert(client: TestClient, node: str) -> str:
    event = TamperEvent(node_id=node, ts=utcnow(), event_id=new_event_id(), seq=1,
                        tamper="enclosure_open")  # fmt: skip
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    return out.notices[0].alert.id


def test_an_alert_whose_ladder_had_ended_escalates_again_when_the_ladder_grows(
    client: TestClient,
) -> None:
    """An alert left with no next step (the issue's stuck panics) is picked up by the change."""
    alert_id = tamper_alert(client, "lhr-grow-01")
    climb(client, alert_id, to_level=1)  # the default ladder's top: it does not repeat
    assert alert(client, alert_id).next_escalation_at is None

    longer = {
        "levels": [{"after_s": 0, "recipient": "zone_operator"}, {"after_s": 300},
                   {"after_s": 600, "recipient": "duty_officer"}],
    }  # fmt: skip
    assert put(client, "default", longer).status_code == 200
    assert alert(client, alert_id).next_escalation_at is not None
    climb(client, alert_id, to_level=2)
    assert alert(client, alert_id).queue == "duty_officer"


def test_a_policy_never_changes_type_and_one_type_has_one_policy(client: TestClient) -> None:
    tamper = {"alert_type": "tamper", "levels": [{"after_s": 0, "recipient": "zone_operator"}]}
    retyped = put(client, "panic", {**PANIC_LADDER, "alert_type": "tamper"})
    assert retyped.status_code == 422
    assert "must cover alert type 'panic'" in retyped.json()["detail"]
    untyped = {k: v for k, v in PANIC_LADDER.items() if k != "alert_type"}
    assert put(client, "panic", untyped).status_code == 422  # would make it the default
    assert put(client, "tamper", {**tamper, "alert_type": "power"}).status_code == 422

    assert put(client, "field-tamper", tamper).status_code == 200
    moved = put(client, "field-tamper", {**tamper, "alert_type": "power"})
    assert moved.status_code == 409
    assert "never changes type" in moved.json()["detail"]
    second = put(client, "tamper", tamper)
    assert second.status_code == 409
    assert "already covers" in second.json()["detail"]


def test_p1_and_default_policies_cannot_be_deleted_other_policies_fall_back(
    client: TestClient,
) -> None:
    admin = login(client, "admin")
    for name in ("panic", "default"):
        response = client.delete(f"{API}/escalation-policies/{name}", headers=admin)
        assert response.status_code == 409, response.text
    assert client.delete(f"{API}/escalation-policies/nope", headers=admin).status_code == 404

    power = {"alert_type": "power", "levels": [{"after_s": 0, "recipient": "power_desk"}]}
    assert put(client, "power", power).status_code == 200
    deleted = client.delete(f"{API}/escalation-policies/power", headers=admin)
    assert deleted.status_code == 204, deleted.text
    names = [p["name"] for p in client.get(f"{API}/escalation-policies", headers=admin).json()]
    assert "power" not in names
    assert {"panic", "default"} <= set(names)
    history = client.get(f"{API}/escalation-policies/power/history", headers=admin).json()
    assert history["data"][0]["action"] == "deleted"
    assert history["data"][0]["after"] is None


def test_every_policy_change_is_recorded_with_who_when_before_and_after(
    client: TestClient,
) -> None:
    before = utcnow()
    first = {"alert_type": "node_offline", "levels": [{"after_s": 0, "recipient": "noc"}]}
    second = {**first, "levels": [*first["levels"], {"after_s": 600, "recipient": "supervisor"}]}
    assert put(client, "node_offline", first).status_code == 200
    assert put(client, "node_offline", second).status_code == 200
    assert put(client, "node_offline", {**first, "alert_type": "pnaic"}).status_code == 422

    response = client.get(
        f"{API}/escalation-policies/node_offline/history", headers=login(client, "audit")
    )
    assert response.status_code == 200, response.text
    history = response.json()
    assert history["count"] == 2  # the refused change left no trace but its 422
    replaced, created = history["data"]
    assert (created["action"], created["actor"], created["before"]) == ("created", "user:admin",
                                                                        None)  # fmt: skip
    assert [lv["recipient"] for lv in created["after"]["levels"]] == ["noc"]
    assert (replaced["action"], replaced["actor"]) == ("replaced", "user:admin")
    assert replaced["before"] == created["after"]
    assert [lv["after_s"] for lv in replaced["after"]["levels"]] == [0, 600]
    assert datetime.fromisoformat(created["at"]) >= before.replace(microsecond=0)

    seeded = client.get(f"{API}/escalation-policies/panic/history", headers=login(client, "admin"))
    assert seeded.json()["data"][-1]["actor"] == "system"  # the seed is the first entry
    forbidden = client.get(
        f"{API}/escalation-policies/node_offline/history", headers=login(client, "op")
    )
    assert forbidden.status_code == 403
    unknown = client.get(f"{API}/escalation-policies/nope/history", headers=login(client, "admin"))
    assert unknown.status_code == 404


def test_a_panic_stranded_by_a_stored_typo_escalates_again_once_the_policy_is_repaired(
    client: TestClient,
) -> None:
    """The issue's database: 'panic' stored as 'pnaic' by an older server, panics stuck."""
    default = {"levels": [{"after_s": 0, "recipient": "zone_operator"},
                          {"after_s": 300, "recipient": "supervisor"}]}  # fmt: skip
    assert put(client, "default", default).status_code == 200  # as seeded
    with Session(runtime_of(client).engine) as session:
        set_policy(session=session, name="panic", alert_type="pnaic", levels=[(0, "zone_operator")],
                   repeat_every_s=300)  # fmt: skip
        session.commit()
    alert_id = make_alert(client, node="lhr-typo-02")
    climb(client, alert_id, to_level=1)  # fell to the default ladder, which ends there
    stuck = alert(client, alert_id)
    assert (stuck.queue, stuck.next_escalation_at) == ("supervisor", None)

    repaired = put(client, "panic", PANIC_LADDER)
    assert repaired.status_code == 200, repaired.text
    assert repaired.json()["alert_type"] == "panic"
    assert alert(client, alert_id).next_escalation_at is not None
    climb(client, alert_id, to_level=3)
    assert alert(client, alert_id).queue == "command_head"
    history = client.get(f"{API}/escalation-policies/panic/history", headers=login(client, "audit"))
    latest = history.json()["data"][0]
    assert (latest["before"]["alert_type"], latest["after"]["alert_type"]) == ("pnaic", "panic")
    assert latest["replanned"] >= 1
