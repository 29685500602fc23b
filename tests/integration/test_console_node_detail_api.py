"""`GET /node-detail/{id}`: one answer for the node page, in-process against SQLite."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Alert, Node, utcnow
from fleet_server.models.enrollment import NodeCommand, NodeReply
from fleet_server.models.plate import NodeCamera
from tests.support.api import API, login, runtime_of


def test_the_node_page_gets_health_from_the_latest_ping_and_outages_from_offline_alerts(
    client: TestClient,
) -> None:
    now = utcnow()
    with Session(runtime_of(client).engine) as session:
        node = Node(node_id="nd-api-1", serial="S1", district="lahore-dha", online=True,
                    lat=31.47, lon=74.40, lifecycle="active")  # fmt: skip
        session.add(node)
        session.add(NodeCamera(node_id="nd-api-1", camera_id="cam0", frames_in=900,
                               frames_dropped=12, fault="camera_stalled"))  # fmt: skip
        session.add(Alert(node_id="nd-api-1", type="node_offline", severity="P3",
                          state="resolved", received_at=now - timedelta(hours=3),
                          resolved_at=now - timedelta(hours=2)))  # fmt: skip
        for n, ok in enumerate((True, False)):
            rid = f"01JPINGREQUEST00000000000{n}"
            sent = now - timedelta(minutes=10 - n)
            session.add(NodeCommand(request_id=rid, node_id="nd-api-1", name="ping", args={},
                                    sent_by="op", sent_at=sent))  # fmt: skip
            health = {"ok": ok, "components": {"camera": {"ok": ok, "detail": f"try {n}"}}}
            session.add(NodeReply(node_id="nd-api-1", request_id=rid, ok=True,
                                  result={"uptime_s": 1.0, "health": health}, ts=now))  # fmt: skip
        session.commit()

    detail = client.get(f"{API}/node-detail/nd-api-1", headers=login(client, "op")).json()

    assert detail["node"]["serial"] == "S1"
    assert detail["health"]["ok"] is False  # the newer ping
    assert detail["health"]["components"]["camera"]["detail"] == "try 1"
    (outage,) = detail["online_history"]["outages"]
    assert round(outage["seconds"]) == 3600
    assert 99.0 < detail["online_history"]["availability_pct"] < 99.5
    assert [c["name"] for c in detail["commands"]] == ["ping", "ping"]
    assert detail["certificate"] is None
    ((camera),) = detail["cameras"]
    assert (camera["camera_id"], camera["frames_in"], camera["frames_dropped"]) == ("cam0", 900, 12)
    assert camera["fault"] == "camera_stalled"
    assert any("per camera over time" in item for item in detail["not_recorded"])


def test_an_unknown_node_is_a_404(client: TestClient) -> None:
    response = client.get(f"{API}/node-detail/no-such-node", headers=login(client, "op"))
    assert response.status_code == 404
