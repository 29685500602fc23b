"""A third-party camera's source and minimums registered on the server, and its verdict shown.

The same FastAPI app, database and ingest as `test_privacy_api` (whose
fixture this reuses): the source (with credentials) reaches the node in the
``set_config`` command and nowhere else — not in any answer, history or
audit record; a source given once is kept when the terms are renewed
without it; a bad source is refused and changes nothing; the node's
``camera_below_standard`` fault and telemetry show on the private camera.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.models import Node, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.privacy import PrivacyPolicyVersion
from proto.ids import new_event_id
from proto.messages import NodeFaultEvent, Telemetry
from tests.integration.test_privacy_api import (  # noqa: F401  (the module's fixture)
    Captured,
    last_command,
    private_body,
    server,
    to_server,
)
from tests.support.api import API, login, runtime_of

NODE = "psh-gw-0002"
SECRET = "s3cret-pw"
SOURCE = f"rtsp://plaza:{SECRET}@10.20.0.7:554/Streaming/Channels/101"


def body(**extra: Any) -> dict[str, Any]:
    return {**private_body(utcnow() + timedelta(days=90), ["plates"]), **extra}


def count_versions(client: TestClient) -> int:
    with Session(runtime_of(client).engine) as session:
        query = select(PrivacyPolicyVersion).where(col(PrivacyPolicyVersion.node_id) == NODE)
        return len(session.exec(query).all())


def test_a_source_reaches_the_node_only_and_its_verdict_shows(
    server: tuple[TestClient, Captured, dict[str, str]],  # noqa: F811
) -> None:
    client, captured, _ = server
    admin, op = login(client, "admin"), login(client, "op")
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=NODE, district="peshawar"))
        session.commit()
    url = f"{API}/privacy/nodes/{NODE}/cameras/plaza/private"
    minimums = {"min_width": 1280, "min_height": 720, "min_fps": 10, "sample_frames": 30}
    answer = client.put(url, headers=admin, json=body(source=SOURCE, standards=minimums))
    assert answer.status_code == 200, answer.text
    assert SECRET not in answer.text
    assert answer.json()["private"]["source"] == "rtsp://***@10.20.0.7:554/Streaming/Channels/101"
    policy = json.loads(str(last_command(captured, NODE).changes["privacy.policy"]))
    terms = policy["cameras"]["plaza"]["private"]
    assert terms["source"] == SOURCE  # the node needs it to open the stream
    assert terms["standards"]["min_width"] == 1280
    assert terms["standards"]["sample_frames"] == 30

    # Renewed without a source: the one held stays.
    answer = client.put(url, headers=admin, json=body(standards=minimums))
    assert answer.status_code == 200, answer.text
    again = json.loads(str(last_command(captured, NODE).changes["privacy.policy"]))
    assert again["cameras"]["plaza"]["private"]["source"] == SOURCE

    # A bad source is refused and no version is made.
    versions = count_versions(client)
    for bad in ("ftp://10.20.0.7/cam", "rtsp://", "/etc/passwd", "camera 7"):
        refused = client.put(url, headers=admin, json=body(source=bad))
        assert refused.status_code == 422, (bad, refused.text)
    refused = client.put(url, headers=admin, json=body(standards={"sample_frames": 1}))
    assert refused.status_code == 422
    assert count_versions(client) == versions

    # Before the node reports the camera: unknown.
    [row] = [r for r in client.get(f"{API}/privacy/private-cameras", headers=op).json()["data"]
             if r["node_id"] == NODE]  # fmt: skip
    assert (row["standard"], row["standard_detail"]) == ("unknown", None)

    # The node's check fails: its fault and telemetry show on the private camera.
    detail = (
        "plaza: 640x360, 19.8 fps, clock unknown over 30 frames: resolution 640x360 below 1280x720"
    )
    fault = NodeFaultEvent(node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=1,
                           component="camera", code="camera_below_standard", active=True,
                           detail=detail)  # fmt: skip
    health = {"camera_id": "plaza", "frames_in": 300, "frames_dropped": 0,
              "shed": "none", "fault": "camera_below_standard"}  # fmt: skip
    to_server(client, fault, Telemetry(node_id=NODE, ts=utcnow(), uptime_s=60.0, cameras=[health]))
    [row] = [r for r in client.get(f"{API}/privacy/private-cameras", headers=op).json()["data"]
             if r["node_id"] == NODE]  # fmt: skip
    assert row["standard"] == "below standard"
    assert row["standard_detail"] == "below standard: " + detail.split(": ", 1)[1]
    assert row["standards"]["min_fps"] == 10

    # Nothing a person can read holds the credentials.
    shown = client.get(f"{API}/privacy/nodes/{NODE}", headers=op).text
    assert SECRET not in shown
    assert "rtsp://***@10.20.0.7" in shown
    assert SECRET not in client.get(f"{API}/privacy/private-cameras", headers=op).text
    with Session(runtime_of(client).engine) as session:
        records = session.exec(
            select(AuditRecord).where(col(AuditRecord.object) == f"camera:{NODE}/plaza")
        ).all()
        assert records
        assert all(SECRET not in json.dumps(r.detail) for r in records)
