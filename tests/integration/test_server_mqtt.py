"""The fleet server against the real Mosquitto: a fake node publishes with paho.

The server runs in this process under uvicorn (its own thread and event
loop), so these tests exercise the real MQTT link, ingest worker, SSE feed
and HTTP stack; one test also runs `nigehbaan server` as a separate process,
kills it with SIGKILL and starts it again on the same database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.app import create_app
from fleet_server.broker import ManagedBroker, free_port
from fleet_server.settings import Settings
from proto.codec import decode, encode, topic_for
from proto.ids import new_event_id
from proto.messages import Ack, AlertStateCommand, PanicEvent, utc_now
from proto.topics import ack_topic, downlink_filters
from tests.support.polling import wait_for

pytestmark = pytest.mark.broker
API = "/api/v1"
ADMIN_PASSWORD = "integration-admin-pw"
T = TypeVar("T")


class FakeNode:
    """A paho client speaking as one node: publishes events, records acks and commands."""

    def __init__(self, broker: ManagedBroker, node_id: str) -> None:
        self.node_id = node_id
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in downlink_filters(node_id)])
        assert self._subscribed.wait(5)
        self.seq = 0

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def press(self) -> PanicEvent:
        self.seq += 1
        event = PanicEvent(
            node_id=self.node_id, ts=utc_now(), event_id=new_event_id(), seq=self.seq
        )
        self.send(event)
        return event

    def send(self, event: PanicEvent) -> None:
        self.publish(topic_for(event), encode(event))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def acked_ids(self) -> list[str]:
        with self._lock:
            msgs = [p for t, p in self.received if t == ack_topic(self.node_id)]
        ids: list[str] = []
        for payload in msgs:
            ack = decode(ack_topic(self.node_id), payload)
            assert isinstance(ack, Ack)
            ids += ack.event_ids
        return ids

    def commands(self) -> list[AlertStateCommand]:
        with self._lock:
            msgs = [(t, p) for t, p in self.received if t.endswith("/cmd/alert_state")]
        out = []
        for topic, payload in msgs:
            cmd = decode(topic, payload)
            assert isinstance(cmd, AlertStateCommand)
            out.append(cmd)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class InProcessServer:
    """create_app() under uvicorn in a thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.port = settings.port
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", log_config=None)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="uvicorn start-up")
        wait_for(lambda: self._mqtt_up(), timeout=20, what="MQTT subscription")

    def _mqtt_up(self) -> bool:
        return bool(httpx.get(f"{self.base_url}/healthz").json()["mqtt"] == "connected")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="module")
def server(broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("server-mqtt"),
        broker_url=broker.url,
        port=free_port(),
        admin_password=ADMIN_PASSWORD,
        mqtt_client_id=f"fleet-server-{uuid.uuid4().hex[:8]}",
        escalation_tick_s=0.2,
        sse_keepalive_s=1.0,
    )
    running = InProcessServer(settings)
    running.start()
    try:
        yield running.base_url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as client:
        token = client.post(
            f"{API}/login/access-token", data={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.fixture
def node(broker: ManagedBroker, request: pytest.FixtureRequest) -> Iterator[FakeNode]:
    fake = FakeNode(broker, f"it-{uuid.uuid4().hex[:10]}")
    yield fake
    fake.close()


def node_alerts(api: httpx.Client, node_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get(f"{API}/alerts", params={"node_id": node_id}).json()[
        "data"
    ]
    return data


def test_a_press_becomes_an_alert_and_the_node_gets_an_ack(
    api: httpx.Client, node: FakeNode
) -> None:
    press = node.press()
    (alert,) = wait_for(lambda: node_alerts(api, node.node_id), what="alert")
    assert (alert["type"], alert["severity"], alert["first_event_id"]) == (
        "panic", "P1", press.event_id,
    )  # fmt: skip
    wait_for(lambda: press.event_id in node.acked_ids(), what="ack")
    # The alert's creation is also announced to the pillar.
    cmd = wait_for(node.commands, what="alert_state command")[0]
    assert (cmd.alert_id, cmd.state) == (alert["id"], "new")


def test_the_same_event_twice_is_one_alert_and_two_acks(api: httpx.Client, node: FakeNode) -> None:
    press = node.press()
    wait_for(lambda: press.event_id in node.acked_ids(), what="first ack")
    node.send(press)
    wait_for(lambda: node.acked_ids().count(press.event_id) == 2, what="second ack")
    alerts = node_alerts(api, node.node_id)
    assert len(alerts) == 1
    assert alerts[0]["press_count"] == 1
    events = api.get(f"{API}/events", params={"node_id": node.node_id}).json()
    assert events["count"] == 1
    assert (events["data"][0]["event_id"], events["data"][0]["alert_id"]) == (
        press.event_id, alerts[0]["id"],
    )  # fmt: skip


def test_the_events_api_refuses_an_unknown_type(api: httpx.Client) -> None:
    response = api.get(f"{API}/events", params={"type": "fireworks"})
    assert response.status_code == 422
    assert "type" in response.text


def test_bad_payloads_are_counted_and_the_next_press_still_gets_in(
    api: httpx.Client, node: FakeNode
) -> None:
    topic = f"nb/v1/{node.node_id}/event/panic"
    node.publish(topic, b"{definitely not json")
    impostor = PanicEvent(node_id="someone-else", ts=utc_now(), event_id=new_event_id(), seq=1)
    node.publish(topic, encode(impostor))
    press = node.press()

    wait_for(lambda: node_alerts(api, node.node_id), what="alert after rejects")
    wait_for(lambda: press.event_id in node.acked_ids(), what="ack after rejects")
    assert impostor.event_id not in node.acked_ids()
    report = api.get(f"{API}/ingest/rejections", params={"node_id": node.node_id}).json()
    counts = {row["reason"]: row["count"] for row in report["data"]}
    assert counts == {"malformed_json": 1, "node_id_mismatch": 1}


def test_an_operator_acknowledgement_reaches_the_pillar(api: httpx.Client, node: FakeNode) -> None:
    node.press()
    (alert,) = wait_for(lambda: node_alerts(api, node.node_id), what="alert")
    response = api.post(
        f"{API}/alerts/{alert['id']}/transitions", json={"to": "acknowledged", "note": "seen"}
    )
    assert response.status_code == 201, response.text
    wait_for(
        lambda: [c for c in node.commands() if c.state == "acknowledged"],
        what="acknowledged AlertStateCommand",
    )


def test_the_live_feed_announces_a_new_alert_with_its_event_id(
    server: str, api: httpx.Client, node: FakeNode
) -> None:
    token = api.headers["Authorization"].removeprefix("Bearer ")
    seen: list[dict[str, Any]] = []
    connected = threading.Event()
    done = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{server}{API}/stream/alerts", params={"access_token": token}, timeout=15
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in response.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "alert":
                    item = json.loads(line.removeprefix("data: "))
                    seen.append(item)
                    if item["alert"]["node_id"] == node.node_id:
                        done.set()
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(10), "SSE stream did not open"
    press = node.press()
    assert done.wait(10), f"no SSE item for {node.node_id}; saw {seen}"
    thread.join(5)
    mine = [i for i in seen if i["alert"]["node_id"] == node.node_id]
    assert (mine[0]["op"], mine[0]["event_id"]) == ("created", press.event_id)
    assert set(mine[0]) == {"op", "alert", "event_id"}


def test_the_feed_refuses_a_missing_token(server: str) -> None:
    assert httpx.get(f"{server}{API}/stream/alerts").status_code == 401


def test_the_server_process_survives_kill_9_and_resumes_on_the_same_database(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "NIGEHBAAN_ENV": "dev", "OP_PW": "operator-password"}
    base = [sys.executable, "-m", "edge_agent.console", "server", "--data-dir", str(tmp_path)]
    made = subprocess.run(
        [*base, "--create-user", "ops", "--role", "operator", "--password-env", "OP_PW"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created operator ops" in made.stdout

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*base, "--broker-url", broker.url, "--port", str(port)],
            env={**env, "NIGEHBAAN_MQTT_CLIENT_ID": f"fs-{port}"},
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the ready line (or exit)
        assert line.startswith("nigehbaan server ready http://127.0.0.1:"), line
        return proc

    proc = start()
    fake = FakeNode(broker, f"it-{uuid.uuid4().hex[:10]}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_for(lambda: client.get("/healthz").json()["mqtt"] == "connected", what="mqtt")
            token = client.post(
                f"{API}/login/access-token",
                data={"username": "ops", "password": "operator-password"},
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            press = fake.press()
            wait_for(lambda: press.event_id in fake.acked_ids(), what="ack before kill")
            # The ack may come from this module's in-process server (same broker,
            # every uplink): kill only once *this* process has committed the alert.
            wait_for(
                lambda: bool(
                    client.get(
                        f"{API}/alerts", params={"node_id": fake.node_id}, headers=headers
                    ).json()["data"]
                ),
                what="alert stored by the server under test",
            )

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = start()

            # Same database, same signing key: the old token and the alert survive.
            alerts = client.get(f"{API}/alerts", params={"node_id": fake.node_id},
                                headers=headers).json()["data"]  # fmt: skip
            assert [a["first_event_id"] for a in alerts] == [press.event_id]
            assert client.get("/healthz").status_code == 200
    finally:
        fake.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
