"""Enrollment end to end through the server's own managed broker (mTLS only, no plain listener).

The story: a node enrolls over the API, connects over mutual TLS with the
certificate it got, announces itself and is seen online; a technician pings
it through the API and reads its reply; an admin revokes it and its open
connection is dropped and it cannot come back, while the server's own
connection (CN fleet-server) survives the broker restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet_server.app import create_app
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import decode, encode
from proto.messages import Birth, Firmware, PingCommand, Reply, Status
from proto.topics import birth_topic, downlink_filters, reply_topic, status_topic
from tests.support.pki import Identity, TlsClient, connects, csr_pem, key_pem, new_key
from tests.support.polling import wait_for

pytestmark = [pytest.mark.broker]

ADMIN_PW = "admin-pw-for-e2e"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        env="dev", data_dir=tmp_path / "server", managed_broker=True, managed_broker_port=0,
        mqtts_port=0, dev_plain_listener=False, admin_password=ADMIN_PW, secret_key="y" * 32,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_enrolled_node_connects_answers_a_ping_and_is_cut_off_when_revoked(
    server: TestClient, tmp_path: Path
) -> None:
    runtime: Runtime = server.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.broker is not None
    assert runtime.mqtt is not None
    assert runtime.broker.config.listeners[0].tls is not None  # no plain listener
    wait_for(runtime.mqtt.subscribed.is_set)
    r = server.post("/api/v1/login/access-token", data={"username": "admin", "password": ADMIN_PW})
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    token = server.post("/api/v1/enrollment-tokens", json={}, headers=admin).json()["token"]
    key = new_key()
    node_id = "lhr-e2e-0001"
    enrolled = server.post("/api/v1/enroll", json={
        "serial": "LHR-E2E-0001", "node_id": node_id, "token": token,
        "csr_pem": csr_pem(key, cn=node_id, serial="LHR-E2E-0001"),
    })  # fmt: skip
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    (tmp_path / "ca.pem").write_text(body["ca_chain_pem"])
    identity = Identity.write(
        tmp_path, node_id, ca=tmp_path / "ca.pem", cert_pem=body["certificate_pem"],
        key=key_pem(key),
    )  # fmt: skip
    port = int(body["broker_url"].rsplit(":", 1)[1])
    node = TlsClient(identity, host="127.0.0.1", port=port).start()
    try:
        assert node.wait_connected(), runtime.broker.log_text()
        node.subscribe(*downlink_filters(node_id))
        now = datetime.now(timezone.utc)
        node.publish(status_topic(node_id), encode(
            Status(node_id=node_id, ts=now, state="online", bd_seq=1)))  # fmt: skip
        node.publish(birth_topic(node_id), encode(Birth(
            node_id=node_id, ts=now, bd_seq=1, serial="LHR-E2E-0001", hardware="test",
            firmware=Firmware(version="0.1.0"), capabilities=["panic_button"],
            config_hash="0" * 64, site_id="s", district="d",
        )))  # fmt: skip
        wait_for(lambda: server.get(f"/api/v1/nodes/{node_id}", headers=admin).json()["online"])

        sent = server.post(f"/api/v1/nodes/{node_id}/commands", json={"name": "ping"},
                           headers=admin)  # fmt: skip
        assert sent.status_code == 202, sent.text
        request_id = sent.json()["request_id"]
        pending = server.get(f"/api/v1/nodes/{node_id}/replies/{request_id}", headers=admin)
        assert pending.json()["detail"]["reason"] in ("reply_pending",)
        topic, payload = node.messages.get(timeout=10)
        command = decode(topic, payload)
        assert isinstance(command, PingCommand)
        assert command.request_id == request_id
        reply = Reply(node_id=node_id, ts=datetime.now(timezone.utc), request_id=request_id,
                      ok=True, result={"uptime_s": 12})  # fmt: skip
        node.publish(reply_topic(node_id, request_id), encode(reply))
        url = f"/api/v1/nodes/{node_id}/replies/{request_id}"
        wait_for(lambda: server.get(url, headers=admin).status_code == 200)
        assert server.get(url, headers=admin).json()["result"] == {"uptime_s": 12}
        bad = server.post(f"/api/v1/nodes/{node_id}/commands", json={"name": "alert_state"},
                          headers=admin)  # fmt: skip
        assert bad.status_code == 422
        assert bad.json()["detail"]["reason"] == "bad_command"

        revoked = server.post(f"/api/v1/nodes/{node_id}/revoke", headers=admin)

        assert revoked.json()["broker"] == "restarted"
        assert node.disconnected.wait(5), "the revoked node stayed connected"
        assert not node.connected.wait(2)
    finally:
        node.stop()
    assert not connects(identity, host="127.0.0.1", port=port)
    wait_for(runtime.mqtt.subscribed.is_set, timeout=15)  # the server itself is back
