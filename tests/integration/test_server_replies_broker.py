"""Through the real broker: a pillar's replies to the server's own commands are kept, a stray one
is refused and counted (issue 11, item 11; docs/protocol.md).

The server runs in this process under uvicorn with its real MQTT link; a paho
client speaks as the pillar. The server's `alert_state` commands are not
stored as rows, so this checks the live wiring that remembers them
(`RecordingPublisher` in the app's lifespan), not only the worker's rule.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, select

from fleet_server.app import create_app
from fleet_server.broker import ManagedBroker, free_port
from fleet_server.models import NodeReply
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import decode, encode, topic_for
from proto.ids import new_event_id, new_request_id
from proto.messages import AlertStateCommand, PanicEvent, Reply, utc_now
from proto.topics import downlink_filters
from tests.support.polling import wait_for

pytestmark = pytest.mark.broker
API = "/api/v1"
PASSWORD = "replies-admin-pw"


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Runtime]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("server-replies"),
        broker_url=broker.url,
        port=free_port(),
        admin_password=PASSWORD,
        mqtt_client_id=f"fleet-server-{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    try:
        wait_for(lambda: uv.started, timeout=20, what="uvicorn start-up")
        wait_for(
            lambda: httpx.get(f"{base}/healthz").json()["mqtt"] == "connected",
            timeout=20,
            what="MQTT link",
        )
        yield base, app.state.runtime
    finally:
        uv.should_exit = True
        thread.join(20)


class Pillar:
    """A paho client as one node: records what the server sends it, publishes what it is told."""

    def __init__(self, broker: ManagedBroker, node_id: str) -> None:
        self.node_id = node_id
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in downlink_filters(node_id)])
        assert subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def alert_states(self) -> list[AlertStateCommand]:
        with self._lock:
            raw = [(t, p) for t, p in self.received if t.endswith("/cmd/alert_state")]
        return [c for t, p in raw if isinstance(c := decode(t, p), AlertStateCommand)]

    def reply(self, request_id: str) -> None:
        answer = Reply(node_id=self.node_id, ts=utc_now(), request_id=request_id, ok=True)
        self.client.publish(topic_for(answer), encode(answer), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_pillar_answering_the_servers_alert_state_is_kept_and_a_stray_reply_is_counted(
    server: tuple[str, Runtime], broker: ManagedBroker
) -> None:
    base, runtime = server
    pillar = Pillar(broker, f"it-{uuid.uuid4().hex[:10]}")
    try:
        press = PanicEvent(node_id=pillar.node_id, ts=utc_now(), event_id=new_event_id(), seq=1)
        pillar.client.publish(topic_for(press), encode(press), qos=1).wait_for_publish(5)
        (command,) = wait_for(pillar.alert_states, what="the server's alert_state command")
        stray = new_request_id()
        pillar.reply(command.request_id)
        pillar.reply(stray)

        def kept() -> set[str]:
            with Session(runtime.engine) as session:
                rows = session.exec(select(NodeReply).where(NodeReply.node_id == pillar.node_id))
                return {r.request_id for r in rows}

        with httpx.Client(base_url=base, timeout=10) as api:
            token = api.post(
                f"{API}/login/access-token", data={"username": "admin", "password": PASSWORD}
            ).json()["access_token"]
            api.headers["Authorization"] = f"Bearer {token}"

            def refused() -> dict[str, int]:
                report = api.get(
                    f"{API}/ingest/rejections", params={"node_id": pillar.node_id}
                ).json()
                return {row["reason"]: row["count"] for row in report["data"]}

            assert wait_for(refused, what="the stray reply counted") == {"unknown_request": 1}
        assert kept() == {command.request_id}
    finally:
        pillar.close()
