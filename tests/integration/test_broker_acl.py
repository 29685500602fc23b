"""The managed broker's ACLs, seen from the fleet server.

The stories: the development "watch" listener (plain, loopback, anonymous)
lets anyone local read the fleet's traffic but not write to it — a panic
published through it reaches nobody; a node that probes another node's
topics over mutual TLS is refused by the broker, and the server counts the
refusals per node and raises an ``acl_denied`` alert once there are enough.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.app import create_app
from fleet_server.models import utcnow
from fleet_server.pki import IssuingCa
from fleet_server.pki.ca import cert_pem
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import encode
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PanicEvent, Status
from proto.topics import birth_topic, event_topic, fleet_filter, status_topic
from tests.support.pki import Identity, TlsClient, key_pem, new_key
from tests.support.polling import wait_for

pytestmark = [pytest.mark.broker]

ADMIN_PW = "admin-pw-for-acl"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        env="dev", data_dir=tmp_path / "server", managed_broker=True, managed_broker_port=0,
        mqtts_port=0, dev_plain_listener=True, admin_password=ADMIN_PW, secret_key="z" * 32,
        acl_denial_alert_threshold=3,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def _runtime(server: TestClient) -> Runtime:
    runtime: Runtime = server.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.broker is not None
    assert runtime.mqtt is not None
    wait_for(runtime.mqtt.subscribed.is_set, "the server's own subscription")
    return runtime


def _admin(server: TestClient) -> dict[str, str]:
    r = server.post("/api/v1/login/access-token", data={"username": "admin", "password": ADMIN_PW})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _node(runtime: Runtime, directory: Path, node_id: str) -> TlsClient:
    """A node with a certificate from the server's own CA, connected over mutual TLS."""
    assert runtime.pki is not None
    assert runtime.broker is not None
    key = new_key()
    ca = IssuingCa(runtime.pki.paths)
    cert = ca.issue_node(
        key=key.public_key(), node_id=node_id, serial=f"SN-{node_id}", now=utcnow(), days=1
    )
    identity = Identity.write(
        directory, node_id, ca=runtime.pki.paths.chain, cert_pem=cert_pem(cert), key=key_pem(key)
    )
    port = int(str(runtime.broker.tls_url).rsplit(":", 1)[1])
    node = TlsClient(identity, host="127.0.0.1", port=port).start()
    assert node.wait_connected(), runtime.broker.log_text()
    return node


def _announce(node: TlsClient, node_id: str) -> None:
    now = utcnow()
    assert node.publish(status_topic(node_id), encode(
        Status(node_id=node_id, ts=now, state="online", bd_seq=1))) == 0  # fmt: skip
    assert node.publish(birth_topic(node_id), encode(Birth(
        node_id=node_id, ts=now, bd_seq=1, serial=f"SN-{node_id}", hardware="test",
        firmware=Firmware(version="0.1.0"), capabilities=["panic_button"],
        config_hash="0" * 64, site_id="s", district="d",
    ))) == 0  # fmt: skip


class _Watcher:
    """A plain, anonymous MQTT 5 client on the watch listener (what `mosquitto_sub` is)."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[str] = queue.Queue()
        self.puback: queue.Queue[int] = queue.Queue()
        self.suback: queue.Queue[list[int]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg.topic)
        self.client.on_publish = lambda _c, _u, _mid, reason, _p: self.puback.put(reason.value)
        self.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: self.suback.put(
            [r.value for r in reasons]
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> int:
        self.client.publish(topic, payload, qos=1)
        return self.puback.get(timeout=5)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_watch_listener_shows_the_fleet_but_a_panic_published_through_it_reaches_nobody(
    server: TestClient, tmp_path: Path
) -> None:
    runtime = _runtime(server)
    assert runtime.broker is not None
    watch = runtime.broker.config.listeners[0]
    assert watch.tls is None
    assert watch.allow_anonymous
    watcher = _Watcher(watch.port)
    node = _node(runtime, tmp_path / "ids", "lhr-acl-0001")
    try:
        watcher.client.subscribe(fleet_filter(), qos=1)
        assert watcher.suback.get(timeout=5) == [1]
        ghost = "ghost-0001"
        panic = PanicEvent(node_id=ghost, ts=utcnow(), event_id=new_event_id(), seq=1)
        assert watcher.publish(event_topic(ghost, "panic"), encode(panic)) == 135
        offline = Status(node_id="lhr-acl-0001", ts=utcnow(), state="offline", bd_seq=9)
        assert watcher.publish(status_topic("lhr-acl-0001"), encode(offline)) == 135

        _announce(node, "lhr-acl-0001")  # after the refused ones: a barrier
        admin = _admin(server)
        wait_for(
            lambda: server.get("/api/v1/nodes/lhr-acl-0001", headers=admin).json().get("online")
        )
        seen = [watcher.messages.get(timeout=5) for _ in range(2)]
        assert seen == [status_topic("lhr-acl-0001"), birth_topic("lhr-acl-0001")]
        assert server.get(f"/api/v1/nodes/{ghost}", headers=admin).status_code == 404
        alerts = server.get("/api/v1/alerts", headers=admin).json()
        assert alerts["count"] == 0, alerts
    finally:
        watcher.stop()
        node.stop()


def test_a_node_probing_other_nodes_topics_is_counted_and_raises_an_acl_denied_alert(
    server: TestClient, tmp_path: Path
) -> None:
    runtime = _runtime(server)
    assert runtime.broker is not None
    prober = "lhr-acl-0002"
    node = _node(runtime, tmp_path / "ids", prober)
    try:
        _announce(node, prober)
        admin = _admin(server)
        wait_for(lambda: server.get(f"/api/v1/nodes/{prober}", headers=admin).json().get("online"))
        victim = "lhr-acl-0009"
        for seq in (1, 2, 3):  # the fixture's threshold
            panic = PanicEvent(node_id=victim, ts=utcnow(), event_id=new_event_id(), seq=seq)
            assert node.publish(event_topic(victim, "panic"), encode(panic)) == 135
    finally:
        node.stop()

    def denied() -> dict[str, int]:
        counts: dict[str, int] = server.get("/healthz").json().get("broker_acl_denials", {})
        return counts if counts.get(prober) == 3 else {}

    assert wait_for(denied, "the denials in /healthz") == {prober: 3}

    def acl_alerts() -> list[dict[str, Any]]:
        alerts = server.get("/api/v1/alerts", headers=admin).json()["data"]
        return [a for a in alerts if a["type"] == "acl_denied"]

    (alert,) = wait_for(acl_alerts, "an acl_denied alert")
    assert alert["node_id"] == prober
    assert f"nb/v1/{victim}/event/panic" in alert["detail"]
    assert server.get(f"/api/v1/nodes/{victim}", headers=admin).status_code == 404
    log = runtime.broker.log_text()
    assert f"Denied PUBLISH from {prober}" in log
    assert "Sending PUBACK" not in log, "per-packet debug traces stay out of mosquitto.log"
