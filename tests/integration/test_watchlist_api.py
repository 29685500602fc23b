"""Watchlists at the server: who may change them, what is refused, what is recorded, and
how a rejected hit becomes a false-accept figure.

Only admins create or change a list; a malformed or already-expired list is
refused with a reason; every change is in the audit log; a hit opens an
alert whose severity follows the list's category; a hit is decided once,
and rejections count per watchlist and per node.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.alerting import load_policies
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.pki.store import PkiPaths, init_dev_pki
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import WatchlistHitEvent
from tests.support.api import API, login, runtime_of

NODE = "isb-wl-0001"


def watchlist(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "category": "wanted_person", "purpose": "warrants, Islamabad",
        "owner_agency": "ICT Police", "districts": ["islamabad"],
        "expires_at": (utcnow() + timedelta(days=3)).isoformat(), **extra,
    }  # fmt: skip


def hit(watchlist_id: str, seq: int) -> WatchlistHitEvent:
    return WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=seq, watchlist_id=watchlist_id,
        watchlist_version=2, entry_id="e-1", match="confusable", camera_id="gate",
        track_id=f"t-{seq}", plate="ICT8B12", listed="ICT8812", confidence=0.8, frames=5,
    )  # fmt: skip


def to_server(client: TestClient, *messages: Any) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


def test_only_admins_change_lists_and_bad_lists_are_refused(client: TestClient) -> None:
    admin, op = login(client, "admin"), login(client, "op")
    assert client.post(f"{API}/watchlists", headers=op, json=watchlist("wl-op")).status_code == 403
    naive = watchlist("wl-naive", expires_at=(utcnow() + timedelta(days=1)).replace(tzinfo=None))
    naive["expires_at"] = naive["expires_at"].isoformat()
    for bad in (
        naive,
        watchlist("wl-past", expires_at=(utcnow() - timedelta(days=1)).isoformat()),
        watchlist("wl-district", districts=[""]),
        watchlist("wl-site", sites=["x" * 65]),
        watchlist("wl-category", category="ex_spouse"),
        watchlist("Bad Name"),
    ):
        answer = client.post(f"{API}/watchlists", headers=admin, json=bad)
        assert answer.status_code == 422, (bad["name"], answer.text)
    assert (
        client.post(f"{API}/watchlists", headers=admin, json=watchlist("wl-a")).status_code == 201
    )
    assert (
        client.post(f"{API}/watchlists", headers=admin, json=watchlist("wl-a")).status_code == 422
    )
    entries = f"{API}/watchlists/wl-a/entries"
    assert client.post(entries, headers=op, json={"plate": "ICT-8812"}).status_code == 403
    for bad_entry in ({"kind": "plate"}, {"plate": "--"}, {"kind": "person", "plate": "AB1"}):
        assert client.post(entries, headers=admin, json=bad_entry).status_code == 422, bad_entry
    added = client.post(entries, headers=admin, json={"plate": "ICT-8812"}).json()
    person = client.post(entries, headers=admin, json={"kind": "person", "note": "photo later"})
    assert person.status_code == 201
    gone = client.delete(f"{API}/watchlists/wl-a/entries/{person.json()['id']}", headers=admin)
    assert gone.json() == {"version": 4}
    assert (
        client.delete(f"{API}/watchlists/wl-a/entries/{added['id']}x", headers=admin).status_code
        == 404
    )
    purpose = {**login(client, "op"), "X-Purpose": "case:ICT-9"}
    assert client.get(f"{API}/watchlists/nope", headers=purpose).status_code == 404
    with Session(runtime_of(client).engine) as session:
        actions = session.exec(
            select(AuditRecord.action).where(col(AuditRecord.object) == "watchlist:wl-a")
        ).all()
    assert list(actions) == [
        "watchlist.created", "watchlist.entry_added", "watchlist.entry_added",
        "watchlist.entry_removed",
    ]  # fmt: skip


def test_a_list_too_large_for_one_command_is_delivered_by_https_fetch(client: TestClient) -> None:
    admin = login(client, "admin")
    paths = PkiPaths(runtime_of(client).settings.pki_path)
    if not paths.exists:
        init_dev_pki(paths, passphrase=b"test-passphrase", now=utcnow())
    client.post(f"{API}/watchlists", headers=admin, json=watchlist("wl-big"))
    bulk = f"{API}/watchlists/wl-big/entries/bulk"
    # one bad entry refuses the whole batch, naming it; an operator may not import
    bad = [{"plate": "BIG1"}, {"kind": "plate"}]
    refused = client.post(bulk, headers=admin, json={"entries": bad})
    assert refused.status_code == 422
    assert "entry 1" in refused.json()["detail"]
    ok = [{"plate": f"BIG{i}"} for i in range(220)]
    assert client.post(bulk, headers=login(client, "op"), json={"entries": ok}).status_code == 403
    assert client.post(bulk, headers=admin, json={"entries": ok}).json() == {
        "added": 220,
        "version": 2,
    }
    answer = client.post(f"{API}/watchlists/wl-big/deliver", headers=admin)
    assert answer.status_code == 202, answer.text
    fetch = answer.json()["fetch"]
    assert fetch["url"] == f"{API}/watchlist-bundles/{fetch['sha256']}"
    assert fetch["size"] > 15 * 1024
    # only nodes fetch bundles, with their client certificate
    assert client.get(fetch["url"], headers=admin).status_code == 401


def test_a_hit_alert_follows_the_category_and_a_rejection_is_a_false_accept(
    client: TestClient,
) -> None:
    admin, op = login(client, "admin"), login(client, "op")
    client.post(f"{API}/watchlists", headers=admin, json=watchlist("wl-wanted"))
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=NODE, district="islamabad"))
        session.commit()
    first, second = hit("wl-wanted", 1), hit("wl-wanted", 2)
    to_server(client, first, second)
    with Session(runtime_of(client).engine) as session:
        alerts = session.exec(select(Alert).where(col(Alert.node_id) == NODE)).all()
    # one alert per hit, never joined; a wanted person is P1
    assert sorted((a.type, a.severity) for a in alerts) == [("watchlist_hit", "P1")] * 2
    for event, decision in ((first, "rejected"), (second, "confirmed")):
        answer = client.post(
            f"{API}/watchlist-hits/{event.event_id}/decision", headers=op,
            json={"decision": decision},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
    assert (
        client.post(
            f"{API}/watchlist-hits/{first.event_id}/decision",
            headers=op,
            json={"decision": "confirmed"},
        ).status_code
        == 409
    )
    figures = client.get(f"{API}/watchlist-hits/false-accepts", headers=op).json()
    assert figures["by_watchlist"]["wl-wanted"] == {
        "confirmed": 1, "rejected": 1, "pending": 0, "false_accept_rate": 0.5,
    }  # fmt: skip
    assert figures["by_node"][NODE]["rejected"] == 1
    with Session(runtime_of(client).engine) as session:
        states = {a.first_event_id: a.state for a in session.exec(select(Alert)).all()}
    assert states[first.event_id] == "false_alarm"  # a rejected hit closes its alert
    assert states[second.event_id] == "new"  # a confirmed one waits for dispatch
    # hits are evidence-like: the list needs a purpose, and the view is recorded
    assert client.get(f"{API}/watchlist-hits", headers=op).status_code == 428
    listed = client.get(f"{API}/watchlist-hits", headers={**op, "X-Purpose": "case:ICT-9"})
    assert {h["event_id"] for h in listed.json()["data"]} >= {first.event_id, second.event_id}
    with Session(runtime_of(client).engine) as session:
        decided = session.exec(
            select(AuditRecord.action).where(col(AuditRecord.action).like("watchlist.hit_%"))
        ).all()
    assert sorted(decided) == ["watchlist.hit_confirmed", "watchlist.hit_rejected"]
