"""Nobody is sent after a watchlist hit that no person has confirmed.

An alert opened by a hit is refused `dispatched` (409, saying the hit waits
for confirmation) while the hit is pending; once an operator confirms the hit
the same move goes through; rejecting the hit closes the alert as a false
alarm and counts in the false-accept figures. The hit console's queue shows
the gate, the crop's hash and the frames from the hit event, and marks where
a confusable read differs; the entry behind a hit needs a stated purpose and
the view is recorded; a user scoped elsewhere sees none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.alerting import load_policies
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, Role, UserCreate, utcnow
from fleet_server.models.scope import DataAccess
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import WatchlistHitEvent

API = "/api/v1"
PASSWORD = "gate-test-password"
NODE = "isb-gate-0001"
CROP = "ab" * 32
PURPOSE = {"X-Purpose": "case:ICT-77"}

Api = tuple[TestClient, dict[str, dict[str, str]]]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gate"), broker_url=None, admin_username="admin",
        admin_password=PASSWORD, secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            session.add(Node(node_id=NODE, district="islamabad", site_id="zero-point"))
            session.commit()
            for name, districts in (("op", None), ("karachi-op", ["karachi"])):
                create_user(
                    session=session,
                    user_in=UserCreate(
                        username=name, role=Role.OPERATOR, password=PASSWORD, districts=districts
                    ),
                )
        tokens = {}
        for name in ("admin", "op", "karachi-op"):
            answer = client.post(
                f"{API}/login/access-token", data={"username": name, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            tokens[name] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        answer = client.post(
            f"{API}/watchlists", headers=tokens["admin"],
            json={"name": "stolen-isb", "category": "stolen_vehicle",
                  "purpose": "stolen cars, Islamabad", "owner_agency": "ICT Police",
                  "districts": ["islamabad"],
                  "expires_at": (utcnow() + timedelta(days=3)).isoformat()},
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        entry = client.post(
            f"{API}/watchlists/stolen-isb/entries", headers=tokens["admin"],
            json={"plate": "ICT-8812", "note": "white Corolla, FIR 112/26"},
        )  # fmt: skip
        assert entry.status_code == 201, entry.text
        client.app.state.entry_id = entry.json()["id"]  # type: ignore[attr-defined]
        yield client, tokens


_seq = iter(range(1, 10_000))


def hit(client: TestClient, *, read: str = "ICT8B12", match: str = "confusable") -> str:
    """A hit as a node sends it, through the real ingest; returns its event id."""
    entry_id: str = client.app.state.entry_id.lower()  # type: ignore[attr-defined]
    event = WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=next(_seq),
        watchlist_id="stolen-isb", watchlist_version=2, entry_id=entry_id, match=match,
        camera_id="gate", track_id="t-1", plate=read, listed="ICT8812", confidence=0.82,
        frames=7, snapshot_sha256=CROP,
    )  # fmt: skip
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    return event.event_id


def alert_of(client: TestClient, event_id: str) -> Alert:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine) as session:
        alert = session.exec(select(Alert).where(col(Alert.first_event_id) == event_id)).one()
        session.expunge(alert)
        return alert


def move(api: Api, alert_id: str, to: str, user: str = "op") -> Any:
    client, tokens = api
    return client.post(
        f"{API}/alerts/{alert_id}/transitions", headers=tokens[user], json={"to": to}
    )


def decide(api: Api, event_id: str, decision: str, note: str = "") -> Any:
    client, tokens = api
    return client.post(
        f"{API}/watchlist-hits/{event_id}/decision", headers=tokens["op"],
        json={"decision": decision, "note": note},
    )  # fmt: skip


def test_a_pending_hit_cannot_be_dispatched_and_a_confirmed_one_can(api: Api) -> None:
    client, _ = api
    event_id = hit(client)
    alert = alert_of(client, event_id)
    assert (alert.type, alert.severity, alert.state) == ("watchlist_hit", "P2", "new")
    for user in ("op", "admin"):  # nobody goes around the gate, admins included
        refused = move(api, alert.id, "dispatched", user)
        assert refused.status_code == 409, refused.text
        assert "waiting for a person to confirm" in refused.json()["detail"]
    # acknowledging is not dispatching: the operator may take the alert meanwhile
    assert move(api, alert.id, "acknowledged").status_code == 201
    assert move(api, alert.id, "dispatched").status_code == 409
    assert alert_of(client, event_id).state == "acknowledged"
    assert decide(api, event_id, "confirmed", "plate and car match FIR").status_code == 200
    assert move(api, alert.id, "dispatched").status_code == 201
    assert alert_of(client, event_id).state == "dispatched"


def test_a_rejected_hit_closes_its_alert_and_counts_as_a_false_accept(api: Api) -> None:
    client, tokens = api
    before = client.get(f"{API}/watchlist-hits/false-accepts", headers=tokens["op"]).json()
    rejected_before = before["by_watchlist"].get("stolen-isb", {}).get("rejected", 0)
    event_id = hit(client, read="ICT8B12")
    alert = alert_of(client, event_id)
    assert decide(api, event_id, "rejected", "a Mehran, not a Corolla").status_code == 200
    closed = alert_of(client, event_id)
    assert closed.state == "false_alarm"
    refused = move(api, alert.id, "dispatched")
    assert refused.status_code == 409  # a false alarm is never dispatched
    after = client.get(f"{API}/watchlist-hits/false-accepts", headers=tokens["op"]).json()
    assert after["by_watchlist"]["stolen-isb"]["rejected"] == rejected_before + 1
    assert after["by_node"][NODE]["rejected"] >= 1
    history = client.get(f"{API}/alerts/{alert.id}/transitions", headers=tokens["op"]).json()
    assert history["data"][-1]["to_state"] == "false_alarm"
    assert "a Mehran, not a Corolla" in history["data"][-1]["note"]


def test_the_queue_shows_the_gate_the_crop_and_where_a_confusable_read_differs(api: Api) -> None:
    client, tokens = api
    exact, confusable = hit(client, read="ICT8812", match="exact"), hit(client)
    assert client.get(f"{API}/watchlist-hits/queue", headers=tokens["op"]).status_code == 428
    answer = client.get(f"{API}/watchlist-hits/queue", headers={**tokens["op"], **PURPOSE})
    assert answer.status_code == 200, answer.text
    rows = {row["event_id"]: row for row in answer.json()["data"]}
    assert {exact, confusable} <= set(rows)
    assert all(row["decision"] == "pending" for row in rows.values())
    one = rows[confusable]
    assert (one["match"], one["plate"], one["listed"]) == ("confusable", "ICT8B12", "ICT8812")
    assert one["differs_at"] == [4]  # B read where the list has 8
    assert rows[exact]["differs_at"] == []
    assert (one["snapshot_sha256"], one["frames"], one["category"]) == (CROP, 7, "stolen_vehicle")
    assert one["alert"]["state"] == "new"
    assert "confirm" in one["dispatch_blocked"]
    # the entry behind the hit: purpose first, and the view is recorded
    entry_url = f"{API}/watchlist-hits/{confusable}/entry"
    assert client.get(entry_url, headers=tokens["op"]).status_code == 428
    bad = client.get(entry_url, headers={**tokens["op"], "X-Purpose": "because"})
    assert bad.status_code == 422
    entry = client.get(entry_url, headers={**tokens["op"], **PURPOSE}).json()
    assert entry["entry"]["note"] == "white Corolla, FIR 112/26"
    assert entry["watchlist"]["owner_agency"] == "ICT Police"
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine) as session:
        views = session.exec(
            select(DataAccess).where(col(DataAccess.resource) == "watchlist_entry")
        ).all()
    assert [(v.actor, v.purpose_kind, v.purpose_ref) for v in views] == [("op", "case", "ICT-77")]


def test_a_user_scoped_elsewhere_sees_no_hit_and_no_entry(api: Api) -> None:
    client, tokens = api
    event_id = hit(client)
    outsider = {**tokens["karachi-op"], **PURPOSE}
    queue = client.get(f"{API}/watchlist-hits/queue", headers=outsider)
    assert queue.status_code == 200
    assert queue.json() == {"data": [], "count": 0}
    entry = client.get(f"{API}/watchlist-hits/{event_id}/entry", headers=outsider)
    assert entry.status_code == 404
    alert = alert_of(client, event_id)
    assert move(api, alert.id, "dispatched", "karachi-op").status_code == 404
    assert decide(api, event_id, "confirmed").status_code == 200  # op, in scope
