"""What an operator compares before confirming a hit: the node's crop beside the enrolment photo.

Story: a node reports a face hit on a wanted person whose entry has an
enrolment photo. Its crop has not reached the server yet, and the hit
queue says so (``not_uploaded``, then ``requested`` once someone asks the
node, ``uploading`` half way) instead of pointing at a file that is not
there. Once stored, the crop is viewed through the evidence route on the
hit's alert and the enrolment photo through the hit; each needs a stated
purpose (428 without), is a 404 for an operator of another district (and
for an alert the file is not evidence on, or a photo of another entry),
and each view is in the audit log with who, why and which alert. The whole
frame the crop came from, when the hit names one, is reported and viewed the
same way.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.auth import create_user
from fleet_server.models import Event, Node, Role, UserCreate, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.evidence import EvidenceItem
from fleet_server.models.watchlist import WatchlistHit
from proto.ids import new_event_id
from proto.messages import WatchlistHitEvent
from tests.integration.test_watchlist_api import to_server
from tests.support.api import API, login, runtime_of
from tests.support.hit_evidence import seed_crop, seed_photo, tiny_png

NODE = "isb-hitev-0001"
PURPOSE = {"X-Purpose": "case:ICT-HIT-7"}
ELSEWHERE_PW = "karachi-desk-pw"


def _face_hit(entry_id: str, crop_sha: str, seq: int) -> WatchlistHitEvent:
    return WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=seq, watchlist_id="wl-faces",
        watchlist_version=3, entry_id=entry_id.lower(), subject="person", match="face",
        camera_id="gate", track_id=f"face-{seq}", confidence=0.74, score=0.74, frames=5,
        snapshot_sha256=crop_sha,
    )  # fmt: skip


def _karachi_operator(client: TestClient) -> dict[str, str]:
    with Session(runtime_of(client).engine) as session:
        create_user(
            session=session,
            user_in=UserCreate(
                username="khi-hits", role=Role.OPERATOR, password=ELSEWHERE_PW,
                districts=["karachi"],
            ),
        )  # fmt: skip
    answer = client.post(
        f"{API}/login/access-token", data={"username": "khi-hits", "password": ELSEWHERE_PW}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _queued(client: TestClient, headers: dict[str, str], event_id: str) -> dict[str, Any]:
    page = client.get(f"{API}/watchlist-hits/queue", headers={**headers, **PURPOSE})
    assert page.status_code == 200, page.text
    hits: list[dict[str, Any]] = page.json()["data"]
    (hit,) = [h for h in hits if h["event_id"] == event_id]
    return hit


def test_the_crop_and_the_enrolment_photo_are_shown_for_a_purpose_recorded_with_the_alert(
    client: TestClient,
) -> None:
    admin, op = login(client, "admin"), login(client, "op")
    runtime = runtime_of(client)
    engine, data_dir = runtime.engine, runtime.settings.data_dir
    made = client.post(
        f"{API}/watchlists", headers=admin,
        json={"name": "wl-faces", "category": "wanted_person", "purpose": "warrants, Islamabad",
              "owner_agency": "ICT Police", "districts": ["islamabad"],
              "expires_at": (utcnow() + timedelta(days=3)).isoformat()},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    entries = f"{API}/watchlists/wl-faces/entries"
    person = client.post(entries, headers=admin, json={"kind": "person", "note": "W-311"}).json()
    other = client.post(entries, headers=admin, json={"kind": "person", "note": "W-312"}).json()
    photo = seed_photo(engine, data_dir, tiny_png(24, 32, (200, 160, 120)), entry_id=person["id"])
    stranger = seed_photo(engine, data_dir, tiny_png(24, 32, (90, 60, 40)), entry_id=other["id"])
    with Session(engine) as session:
        session.add(Node(node_id=NODE, district="islamabad"))
        session.commit()

    crop_bytes = tiny_png(40, 40, (180, 140, 110))
    crop = hashlib.sha256(crop_bytes).hexdigest()
    event = _face_hit(person["id"], crop, seq=1)
    to_server(client, event)
    frame_bytes = tiny_png(64, 48, (120, 130, 140))
    frame = hashlib.sha256(frame_bytes).hexdigest()
    with Session(engine) as session:
        alert_id = session.get(WatchlistHit, event.event_id).alert_id  # type: ignore[union-attr]
        # The whole frame the crop came from, as a node that names it sends it (optional field).
        stored_event = session.get(Event, event.event_id)
        assert stored_event is not None
        stored_event.payload = json.dumps(
            {**json.loads(stored_event.payload), "frame_sha256": frame}
        )
        session.add(stored_event)
        session.commit()
    assert alert_id

    # Not on the server yet: the queue says so, the evidence route has no file.
    queued = _queued(client, op, event.event_id)
    assert queued["crop"] == {
        "sha256": crop, "state": "not_uploaded", "size": None, "received": 0,
        "content_type": None,
    }  # fmt: skip
    assert (queued["score"], queued["frames"], queued["node_id"]) == (0.74, 5, NODE)
    file_url = f"{API}/evidence/{crop}/file?alert_id={alert_id}"
    assert client.get(file_url, headers={**op, **PURPOSE}).status_code == 404
    asked = client.post(
        f"{API}/evidence/requests", headers={**op, **PURPOSE},
        json={"sha256": crop, "node_id": NODE},
    )  # fmt: skip
    assert asked.status_code == 202, asked.text
    assert _queued(client, op, event.event_id)["crop"]["state"] == "requested"

    # Half uploaded, then stored (as the node's resumable upload leaves it).
    seed_crop(
        engine, data_dir, crop_bytes, node_id=NODE, district="islamabad",
        event_id=event.event_id, state="partial",
    )  # fmt: skip
    half = _queued(client, op, event.event_id)["crop"]
    assert half["state"] == "uploading"
    assert half["received"] == len(crop_bytes) // 2
    with Session(engine) as session:
        item = session.get(EvidenceItem, crop)
        assert item is not None
        session.delete(item)
        session.commit()
    seed_crop(
        engine, data_dir, crop_bytes, node_id=NODE, district="islamabad", event_id=event.event_id
    )
    assert _queued(client, op, event.event_id)["crop"]["state"] == "stored"
    assert _queued(client, op, event.event_id)["frame"]["state"] == "not_uploaded"
    seed_crop(
        engine, data_dir, frame_bytes, node_id=NODE, district="islamabad", event_id=event.event_id
    )
    assert _queued(client, op, event.event_id)["frame"]["state"] == "stored"
    frame_url = f"{API}/evidence/{frame}/file?alert_id={alert_id}"
    assert client.get(frame_url, headers={**op, **PURPOSE}).content == frame_bytes

    # The entry names its photos; both pictures need a stated purpose.
    entry = client.get(f"{API}/watchlist-hits/{event.event_id}/entry", headers={**op, **PURPOSE})
    assert [p["sha256"] for p in entry.json()["entry"]["photos"]] == [photo]
    photo_url = f"{API}/watchlist-hits/{event.event_id}/photos/{photo}"
    assert client.get(photo_url, headers=op).status_code == 428
    assert client.get(file_url, headers=op).status_code == 428

    shown = client.get(file_url, headers={**op, **PURPOSE})
    assert shown.status_code == 200
    assert shown.content == crop_bytes
    enrolled = client.get(photo_url, headers={**op, **PURPOSE})
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.headers["content-type"] == "image/png"
    assert enrolled.content.startswith(b"\x89PNG")

    # Another district's operator, a wrong alert, another entry's photo: 404.
    elsewhere = {**_karachi_operator(client), **PURPOSE}
    assert client.get(file_url, headers=elsewhere).status_code == 404
    assert client.get(photo_url, headers=elsewhere).status_code == 404
    assert (
        client.get(f"{API}/watchlist-hits/{event.event_id}/entry", headers=elsewhere).status_code
        == 404
    )
    wrong_alert = f"{API}/evidence/{crop}/file?alert_id={'0' * 26}"
    assert client.get(wrong_alert, headers={**op, **PURPOSE}).status_code == 404
    other_photo = f"{API}/watchlist-hits/{event.event_id}/photos/{stranger}"
    assert client.get(other_photo, headers={**op, **PURPOSE}).status_code == 404

    # A view without the alert named is still recorded with the file's alert.
    assert client.get(f"{API}/evidence/{crop}/file", headers={**op, **PURPOSE}).status_code == 200
    objects = [
        f"evidence:{crop}",
        f"evidence:{frame}",
        f"watchlist_photo:{photo}",
        f"watchlist_entry:wl-faces/{person['id'].lower()}",
    ]
    with Session(engine) as session:
        views = session.exec(
            select(AuditRecord)
            .where(col(AuditRecord.action) == "data.viewed")
            .where(col(AuditRecord.object).in_(objects))
            .order_by(col(AuditRecord.seq))
        ).all()
    seen = [(v.actor, v.object, v.detail.get("alert_id")) for v in views]
    assert seen == [
        ("user:op", f"evidence:{frame}", alert_id),
        ("user:op", objects[3], alert_id),
        ("user:op", f"evidence:{crop}", alert_id),
        ("user:op", f"watchlist_photo:{photo}", alert_id),
        ("user:op", f"evidence:{crop}", alert_id),
    ]
    assert {v.detail["reference"] for v in views} == {"ICT-HIT-7"}


def test_a_hit_without_a_crop_says_so(client: TestClient) -> None:
    """A hit whose node named no crop: ``crop`` is null, not a broken picture."""
    admin, op = login(client, "admin"), login(client, "op")
    client.post(
        f"{API}/watchlists", headers=admin,
        json={"name": "wl-nocrop", "category": "stolen_vehicle", "purpose": "stolen cars",
              "owner_agency": "ICT Police", "districts": ["islamabad"],
              "expires_at": (utcnow() + timedelta(days=3)).isoformat()},
    )  # fmt: skip
    with Session(runtime_of(client).engine) as session:
        if session.get(Node, NODE) is None:
            session.add(Node(node_id=NODE, district="islamabad"))
            session.commit()
    event = WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=50, watchlist_id="wl-nocrop",
        watchlist_version=2, entry_id="e-9", match="exact", camera_id="gate", track_id="t-50",
        plate="ICT8812", listed="ICT8812", confidence=0.9, frames=4,
    )  # fmt: skip
    to_server(client, event)
    hit = _queued(client, op, event.event_id)
    assert hit["crop"] is None
    assert hit["frame"] is None
    assert hit["snapshot_sha256"] is None
