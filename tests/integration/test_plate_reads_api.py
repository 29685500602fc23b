"""An operator searches plate reads through the API: exact, prefix, one look-alike away,
by node, district and time, in bounded pages; a district-scoped user sees only its district;
camera health is listed per camera. A search needs a stated purpose and is recorded with it.
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
from fleet_server.models import DataAccess, Node, Role, UserCreate, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent, Telemetry, WireModel

API = "/api/v1"
PURPOSE = {"X-Purpose": "case:PR-2026-114"}
PASSWORD = "plate-reads-password"
NOW = utcnow()


def plate(node: str, seq: int, text: str) -> PlateEvent:
    return PlateEvent(
        node_id=node, ts=NOW, event_id=new_event_id(), seq=seq, camera_id="gate",
        track_id=f"t{seq}", plate=text, confidence=0.9, frames=3,
    )  # fmt: skip


def ingest(runtime: Runtime, messages: list[WireModel]) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(runtime.engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("plates"), broker_url=None, admin_username="admin",
        admin_password=PASSWORD, secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            session.add(Node(node_id="lhr-cam-0001", district="Gulberg"))
            session.add(Node(node_id="khi-cam-0001", district="Clifton"))
            session.commit()
            create_user(
                session=session,
                user_in=UserCreate(
                    username="clifton-op", role=Role.OPERATOR, password=PASSWORD,
                    districts=["Clifton"],
                ),
            )  # fmt: skip
        texts = ["LEB6881", "LEB6882", "LE86881", "LEA1234", "AZU290"]
        ingest(runtime, [plate("lhr-cam-0001", i + 1, t) for i, t in enumerate(texts)])
        ingest(runtime, [plate("khi-cam-0001", 1, "LEB-6881")])
        ingest(
            runtime,
            [
                Telemetry.model_validate(
                    {"node_id": "khi-cam-0001", "ts": NOW, "uptime_s": 5.0,
                     "cameras": [{"camera_id": "gate", "frames_in": 9, "shed": "slowed",
                                  "analytics_rate": 0.5}]}
                )
            ],
        )  # fmt: skip
        tokens = {}
        for name in ("admin", "clifton-op"):
            answer = client.post(
                f"{API}/login/access-token", data={"username": name, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            tokens[name] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        yield client, tokens


def search(
    api: tuple[TestClient, dict[str, dict[str, str]]], user: str = "admin", **params: object
) -> dict[str, Any]:
    client, tokens = api
    answer = client.get(f"{API}/plate-reads", params=params, headers={**tokens[user], **PURPOSE})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def keys(body: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((r["canonical"], r["node_id"]) for r in body["data"])


def test_exact_prefix_and_fuzzy_search(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    assert keys(search(api, plate="leb 6881")) == [
        ("LEB6881", "khi-cam-0001"), ("LEB6881", "lhr-cam-0001"),
    ]  # fmt: skip
    assert search(api, plate="LEB", match="prefix")["count"] == 3
    fuzzy = keys(search(api, plate="LEB6881", match="fuzzy", node_id="lhr-cam-0001"))
    assert fuzzy == [("LE86881", "lhr-cam-0001"), ("LEB6881", "lhr-cam-0001")]
    by_district = search(api, plate="LEB6881", district="Clifton")
    assert keys(by_district) == [("LEB6881", "khi-cam-0001")]
    assert by_district["data"][0]["district"] == "Clifton"
    later = (NOW + timedelta(days=1)).isoformat()
    assert search(api, since=later)["count"] == 0


def test_pages_are_bounded(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    page = search(api, limit=2, offset=1)
    assert page["count"] == 6
    assert len(page["data"]) == 2
    client, tokens = api
    for params in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"plate": "X" * 33}):
        answer = client.get(
            f"{API}/plate-reads", params=params, headers={**tokens["admin"], **PURPOSE}
        )
        assert answer.status_code == 422, params
    answer = client.get(
        f"{API}/plate-reads", params={"plate": "--"}, headers={**tokens["admin"], **PURPOSE}
    )
    assert answer.status_code == 422


def test_a_district_scoped_user_sees_only_its_district(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    body = search(api, user="clifton-op", plate="LEB", match="prefix")
    assert keys(body) == [("LEB6881", "khi-cam-0001")]
    assert body["count"] == 1
    assert search(api, user="clifton-op", node_id="lhr-cam-0001")["count"] == 0


def test_camera_health_lists_each_camera_in_scope(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, tokens = api
    answer = client.get(f"{API}/cameras", headers=tokens["clifton-op"])
    assert answer.status_code == 200, answer.text
    (camera,) = answer.json()["data"]
    assert (camera["node_id"], camera["camera_id"], camera["shed"]) == (
        "khi-cam-0001", "gate", "slowed",
    )  # fmt: skip
    assert camera["district"] == "Clifton"
    assert client.get(f"{API}/plate-reads").status_code == 401


def test_a_search_without_a_stated_purpose_is_refused_and_nothing_is_shown(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, tokens = api
    answer = client.get(f"{API}/plate-reads", params={"plate": "LEB6881"}, headers=tokens["admin"])
    assert answer.status_code == 428, answer.text
    assert "X-Purpose" in answer.json()["detail"]
    assert "LEB" not in answer.text
    for bad in ("because", "note:short", "case:", "alert:not-an-alert-id"):
        answer = client.get(
            f"{API}/plate-reads", params={"plate": "LEB6881"},
            headers={**tokens["admin"], "X-Purpose": bad},
        )  # fmt: skip
        assert answer.status_code == 422, bad
        assert "LEB" not in answer.text
    # Camera health is not evidence: no purpose needed.
    assert client.get(f"{API}/cameras", headers=tokens["admin"]).status_code == 200


def test_each_search_is_recorded_with_its_purpose_in_the_audit_log(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, tokens = api
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    answer = client.get(
        f"{API}/plate-reads", params={"plate": "LEA 1234", "match": "prefix"},
        headers={**tokens["clifton-op"], "X-Purpose": "fir:FIR 77/2026 Clifton"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    with Session(runtime.engine) as session:
        access = session.exec(
            select(DataAccess).where(col(DataAccess.purpose_ref) == "FIR 77/2026 Clifton")
        ).one()
        assert (access.actor, access.resource, access.purpose_kind) == (
            "clifton-op", "plate_reads", "fir",
        )  # fmt: skip
        assert access.object_id == "plate=LEA 1234 match=prefix"
        record = session.exec(
            select(AuditRecord)
            .where(col(AuditRecord.action) == "data.viewed")
            .where(col(AuditRecord.object) == "plate_reads:plate=LEA 1234 match=prefix")
        ).one()
        assert record.actor == "user:clifton-op"
        assert record.detail["purpose"] == "fir"
        assert record.detail["reference"] == "FIR 77/2026 Clifton"
