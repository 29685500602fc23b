"""Privacy masks and private cameras through the API: versioned, audited, delivered, enforced.

An admin draws masks for a camera: each change is a new version with who and
why, in the audit log, sent to the node as a ``set_config`` command carrying
the policy; bad polygons and a policy too large for one command are refused
and change nothing. The node's telemetry says which version it applies, and
the lagging list shows nodes behind. A camera marked private contributes
only what its agreement allows, and nothing once it expires: the server
withholds such plate reads even when a node sends them; an agreement about
to expire opens one alert. Operators read but do not change; a district
admin sees nothing of another district.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.alerting import load_policies
from fleet_server.auth import create_user
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Event, Node, NodeCommand, Role, UserCreate, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.plate import PlateRead
from fleet_server.privacy.service import ExpiryWarningJob, PrivacyDeliveryJob
from proto.codec import decode, encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent, SetConfigCommand, Telemetry
from tests.support.api import API, login, runtime_of

NODE = "lhr-prv-0001"
OTHER = "khi-prv-0001"
SQUARE = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]
KHI_ADMIN = ("khi-admin", "karachi-admin-password")


class Captured:
    """Stands in for the server's MQTT link: keeps what the API publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connected.set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append((topic, payload))


@pytest.fixture(scope="module")
def server(client: TestClient) -> Iterator[tuple[TestClient, Captured, dict[str, str]]]:
    runtime = runtime_of(client)
    with Session(runtime.engine) as session:
        session.add(Node(node_id=NODE, district="lahore"))
        session.add(Node(node_id=OTHER, district="karachi"))
        session.commit()
        create_user(
            session=session,
            user_in=UserCreate(username=KHI_ADMIN[0], role=Role.ADMIN, password=KHI_ADMIN[1],
                               districts=["karachi"]),
        )  # fmt: skip
    answer = client.post(
        f"{API}/login/access-token", data={"username": KHI_ADMIN[0], "password": KHI_ADMIN[1]}
    )
    khi = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    captured = Captured()
    before = runtime.mqtt
    runtime.mqtt = captured  # type: ignore[assignment]
    yield client, captured, khi
    runtime.mqtt = before


def to_server(client: TestClient, *messages: Any, at: Any = None) -> None:
    envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in messages])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=at or utcnow(), policies=policies)
        session.commit()


def masks_url(node: str, camera: str) -> str:
    return f"{API}/privacy/nodes/{node}/cameras/{camera}/masks"


def last_command(captured: Captured, node: str) -> SetConfigCommand:
    topic, payload = [(t, p) for t, p in captured.published if f"/{node}/" in t][-1]
    assert topic.endswith("/cmd/set_config")
    command = decode(topic, payload)
    assert isinstance(command, SetConfigCommand)
    return command


def test_each_mask_change_is_a_version_with_who_and_why_audited_and_sent_to_the_node(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, captured, _ = server
    admin = login(client, "admin")
    body = {"masks": [SQUARE], "reason": "windows of the flats opposite"}
    first = client.put(masks_url(NODE, "gate"), headers=admin, json=body)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    assert first.json()["published"] is True
    command = last_command(captured, NODE)
    assert command.request_id == first.json()["request_id"]
    policy = json.loads(str(command.changes["privacy.policy"]))
    assert policy == {"version": 1, "cameras": {"gate": {"masks": [SQUARE]}}}

    yard = [[0.0, 0.6], [0.3, 0.6], [0.3, 1.0], [0.0, 1.0]]
    body = {"masks": [yard], "reason": "school yard behind the wall"}
    second = client.put(masks_url(NODE, "yard-cam"), headers=admin, json=body)
    assert second.json()["version"] == 2
    policy = json.loads(str(last_command(captured, NODE).changes["privacy.policy"]))
    assert set(policy["cameras"]) == {"gate", "yard-cam"}  # the other camera kept

    shown = client.get(f"{API}/privacy/nodes/{NODE}", headers=login(client, "op")).json()
    assert shown["current"]["version"] == 2
    assert [(h["version"], h["changed_by"], h["reason"]) for h in shown["history"]] == [
        (2, "admin", "school yard behind the wall"),
        (1, "admin", "windows of the flats opposite"),
    ]
    assert shown["lagging"] is True
    assert shown["applied"] is None
    with Session(runtime_of(client).engine) as session:
        records = session.exec(
            select(AuditRecord).where(col(AuditRecord.action) == "privacy.masks_changed")
        ).all()
        assert [(r.object, r.detail["version"], r.detail["reason"]) for r in records] == [
            (f"camera:{NODE}/gate", 1, "windows of the flats opposite"),
            (f"camera:{NODE}/yard-cam", 2, "school yard behind the wall"),
        ]
        assert all(r.actor == "user:admin" for r in records)
        sent = session.exec(select(NodeCommand).where(col(NodeCommand.node_id) == NODE)).all()
        assert [c.args for c in sent][-2:] == [{"privacy_version": 1}, {"privacy_version": 2}]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"masks": [[[0, 0], [1, 0]]], "reason": "too few corners"}, "at least 3"),
        ({"masks": [[[0, 0], [1.5, 0], [1, 1]]], "reason": "outside the frame"}, "less than"),
        ({"masks": [SQUARE]}, "reason"),
        ({"masks": [SQUARE], "reason": "  "}, "reason"),
        ({"masks": [SQUARE] * 17, "reason": "too many masks"}, "at most 16"),
    ],
)
def test_a_bad_mask_is_refused_and_changes_nothing(
    server: tuple[TestClient, Captured, dict[str, str]], body: dict[str, Any], says: str
) -> None:
    client, captured, _ = server
    admin = login(client, "admin")
    before = client.get(f"{API}/privacy/nodes/{NODE}", headers=admin).json()["current"]
    sent = len(captured.published)
    answer = client.put(masks_url(NODE, "gate"), headers=admin, json=body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text
    assert client.get(f"{API}/privacy/nodes/{NODE}", headers=admin).json()["current"] == before
    assert len(captured.published) == sent


def test_a_policy_too_large_for_one_command_is_refused_and_no_version_is_kept(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, _, _ = server
    admin = login(client, "admin")
    ring = [[round(0.5 + 0.4 * (i % 2) * 0.123456, 5), round(i / 31, 5)] for i in range(32)]
    big = {"masks": [ring] * 16, "reason": "many detailed masks"}
    assert client.put(masks_url(OTHER, "a"), headers=admin, json=big).status_code == 200
    answer = client.put(masks_url(OTHER, "b"), headers=admin, json=big)
    assert answer.status_code == 422, answer.text
    assert "too large for one command" in answer.text
    shown = client.get(f"{API}/privacy/nodes/{OTHER}", headers=admin).json()
    assert shown["current"]["version"] == 1
    assert set(shown["current"]["cameras"]) == {"a"}


def test_the_node_reports_the_version_it_applies_and_the_lagging_list_follows(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, _, _ = server
    op = login(client, "op")
    lag = {r["node_id"]: r for r in client.get(f"{API}/privacy/lagging", headers=op).json()["data"]}
    assert lag[NODE]["applied"] is None
    current = lag[NODE]["current"]
    telemetry = Telemetry(node_id=NODE, ts=utcnow(), uptime_s=5.0, privacy_version=current - 1)
    to_server(client, telemetry)
    lag = {r["node_id"]: r for r in client.get(f"{API}/privacy/lagging", headers=op).json()["data"]}
    assert lag[NODE]["applied"] == current - 1
    to_server(client, Telemetry(node_id=NODE, ts=utcnow(), uptime_s=9.0, privacy_version=current))
    lag = {r["node_id"]: r for r in client.get(f"{API}/privacy/lagging", headers=op).json()["data"]}
    assert NODE not in lag
    shown = client.get(f"{API}/privacy/nodes/{NODE}", headers=op).json()
    assert (shown["applied"]["version"], shown["lagging"]) == (current, False)


def test_operators_read_but_do_not_change_and_another_district_sees_nothing(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, _, khi = server
    op = login(client, "op")
    body = {"masks": [SQUARE], "reason": "an operator tries"}
    assert client.put(masks_url(NODE, "gate"), headers=op, json=body).status_code == 403
    assert client.post(f"{API}/privacy/nodes/{NODE}/deliver", headers=op).status_code == 403
    # The Karachi admin: Lahore's node is a 404 like a missing one, and absent from the lists.
    for answer in (
        client.get(f"{API}/privacy/nodes/{NODE}", headers=khi),
        client.put(masks_url(NODE, "gate"), headers=khi, json=body),
        client.post(f"{API}/privacy/nodes/{NODE}/deliver", headers=khi),
    ):
        assert answer.status_code == 404, answer.text
    missing = client.get(f"{API}/privacy/nodes/no-such-node", headers=khi)
    assert missing.status_code == 404
    lists = [client.get(f"{API}/privacy/{p}", headers=khi).text for p in
             ("lagging", "private-cameras")]  # fmt: skip
    assert not any(NODE in text for text in lists)
    assert client.get(f"{API}/privacy/nodes/{OTHER}", headers=khi).status_code == 200


def plate(node: str, camera: str, seq: int, text: str) -> PlateEvent:
    return PlateEvent(node_id=node, ts=utcnow(), event_id=new_event_id(), seq=seq,
                      camera_id=camera, track_id=f"t{seq}", plate=text, confidence=0.9,
                      frames=3)  # fmt: skip


def private_body(expires: Any, allow: list[str]) -> dict[str, Any]:
    return {"owner": "Pearl Continental Peshawar", "agreement": "KP-DSA-2026-014",
            "expires_at": expires.isoformat(), "allow": allow,
            "reason": "hotel gate camera joins the network"}  # fmt: skip


def test_a_private_camera_contributes_only_what_its_agreement_allows_and_nothing_after(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, captured, _ = server
    admin = login(client, "admin")
    node = "psh-prv-0001"
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=node, district="peshawar"))
        session.commit()
    ends = utcnow() + timedelta(days=3)
    answer = client.put(f"{API}/privacy/nodes/{node}/cameras/lobby/private", headers=admin,
                        json=private_body(ends, ["plates", "live_view"]))  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["private"]["allow"] == ["live_view", "plates"]
    policy = json.loads(str(last_command(captured, node).changes["privacy.policy"]))
    assert policy["cameras"]["lobby"]["private"]["allow"] == ["live_view", "plates"]
    assert policy["cameras"]["lobby"]["private"]["agreement"] == "KP-DSA-2026-014"

    # While the agreement runs, its plate reads are kept; a camera of our own is not limited.
    to_server(client, plate(node, "lobby", 1, "PSH1234"), plate(node, "street", 2, "PSH7777"))
    # After it expires (by receive time), the server withholds what the node still sends.
    late = plate(node, "lobby", 3, "PSH9999")
    to_server(client, late, at=ends + timedelta(seconds=1))
    with Session(runtime_of(client).engine) as session:
        reads = session.exec(select(PlateRead).where(col(PlateRead.node_id) == node)).all()
        assert sorted(r.plate for r in reads) == ["PSH1234", "PSH7777"]
        event = session.get(Event, late.event_id)
        assert event is not None  # acked and kept as an event, so the node stops resending
        assert "PSH9999" not in event.payload
        assert json.loads(event.payload)["withheld"] == "agreement expired"

    # An agreement without plates: its reads are withheld at once.
    client.put(f"{API}/privacy/nodes/{node}/cameras/lobby/private", headers=admin,
               json=private_body(ends, ["live_view"]))  # fmt: skip
    no_plates = plate(node, "lobby", 4, "PSH4444")
    to_server(client, no_plates)
    with Session(runtime_of(client).engine) as session:
        assert session.get(PlateRead, no_plates.event_id) is None
        event = session.get(Event, no_plates.event_id)
        assert event is not None
        assert json.loads(event.payload)["withheld"] == "agreement does not allow plates"

    listed = client.get(f"{API}/privacy/private-cameras", headers=login(client, "op")).json()
    [row] = [r for r in listed["data"] if r["node_id"] == node]
    assert (row["camera_id"], row["expired"], row["allow"]) == ("lobby", False, ["live_view"])


def test_an_agreement_about_to_expire_opens_one_alert_for_admins(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, _, _ = server
    admin = login(client, "admin")
    node = "isb-prv-0001"
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=node, district="islamabad"))
        session.commit()
    soon = utcnow() + timedelta(days=5)
    client.put(f"{API}/privacy/nodes/{node}/cameras/gate/private", headers=admin,
               json=private_body(soon, ["plates"]))  # fmt: skip
    client.put(f"{API}/privacy/nodes/{node}/cameras/far/private", headers=admin,
               json=private_body(utcnow() + timedelta(days=90), ["plates"]))  # fmt: skip
    job = ExpiryWarningJob(warn_days=14)
    engine = runtime_of(client).engine
    warned = []
    for _ in range(2):  # the second run warns nobody again
        job._next_at = None
        with Session(engine, expire_on_commit=False) as session:  # as the timer loop's
            warned.append([n.alert.node_id for n in job.run(session, utcnow())])
            session.commit()
    assert warned[0].count(node) == 1  # the gate camera, not the one with 90 days left
    assert warned[1] == []
    with Session(engine) as session:
        alerts = session.exec(
            select(Alert).where(col(Alert.node_id) == node)
            .where(col(Alert.type) == "agreement_expiring")
        ).all()  # fmt: skip
        assert len(alerts) == 1
        assert alerts[0].severity == "P4"
        assert "gate" in (alerts[0].detail or "")
        assert "KP-DSA-2026-014" in (alerts[0].detail or "")
    # A renewed agreement (new expiry) is warned about again when it nears.
    client.put(f"{API}/privacy/nodes/{node}/cameras/gate/private", headers=admin,
               json=private_body(soon + timedelta(days=1), ["plates"]))  # fmt: skip
    job._next_at = None
    with Session(engine, expire_on_commit=False) as session:
        assert [n.alert.node_id for n in job.run(session, utcnow())] == [node]
        session.commit()


def test_an_online_node_behind_its_version_gets_it_again_until_it_reports_it(
    server: tuple[TestClient, Captured, dict[str, str]],
) -> None:
    client, _, _ = server
    admin = login(client, "admin")
    node = "lhr-prv-0009"
    engine = runtime_of(client).engine
    with Session(engine) as session:
        session.add(Node(node_id=node, district="lahore", online=False))
        session.commit()
    body = {"masks": [SQUARE], "reason": "saved while the node was away"}
    saved = client.put(masks_url(node, "gate"), headers=admin, json=body)
    assert saved.json()["version"] == 1
    mqtt = Captured()
    job = PrivacyDeliveryJob(publisher=lambda: mqtt, every_s=0.0, resend_s=300.0)
    start = utcnow()

    def tick(at: Any) -> list[str]:
        before = len(mqtt.published)
        with Session(engine, expire_on_commit=False) as session:
            job.run(session, at)
            session.commit()
        return [t for t, _ in mqtt.published[before:] if f"/{node}/" in t]

    assert tick(start) == []  # offline: nothing is sent into the void
    with Session(engine) as session:
        row = session.get(Node, node)
        assert row is not None
        row.online = True
        session.add(row)
        session.commit()
    assert tick(start + timedelta(seconds=1)) == [f"nb/v1/{node}/cmd/set_config"]
    assert tick(start + timedelta(seconds=60)) == []  # given time to apply and report
    assert len(tick(start + timedelta(seconds=302))) == 1  # still behind: once more
    to_server(client, Telemetry(node_id=node, ts=utcnow(), uptime_s=3.0, privacy_version=1))
    assert tick(start + timedelta(seconds=700)) == []  # it applies the version now
    with Session(engine) as session:
        records = session.exec(
            select(AuditRecord)
            .where(col(AuditRecord.action) == "privacy.delivered")
            .where(col(AuditRecord.object) == f"node:{node}")
        ).all()
        assert [r.actor for r in records] == ["user:admin", "system", "system"]
