"""A node whose hardware does not load tells the fleet so through the real broker, then stops.

`nigehbaan agent` runs as a child process with no board named on a machine
without GPIO (skipped where the rpi backend loads). A small stand-in server
on the real Mosquitto receives the `node_fault` event and acknowledges it the
way the fleet server does; the agent exits 3 with its one line, and its
outbox is empty because the ack came.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.outbox import Outbox
from fleet_server.broker import ManagedBroker
from hardware import BackendUnavailable, RpiBackend
from proto.codec import decode_uplink, encode, topic_for
from proto.messages import Ack, Birth, NodeFaultEvent, utc_now
from proto.topics import PREFIX

pytestmark = pytest.mark.broker

NODE = "lhr-pillar-0042"


class AckingServer:
    """Records the node's uplink and acks its events, like the server after its commit."""

    def __init__(self, broker: ManagedBroker) -> None:
        self.lock = threading.Lock()
        self.messages: list[Any] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"srv-{NODE}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"{PREFIX}/{NODE}/#", qos=1)

    def _message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if "/cmd/" in msg.topic or msg.topic.endswith("/ack"):
            return
        message = decode_uplink(msg.topic, bytes(msg.payload)).message
        with self.lock:
            self.messages.append(message)
        if isinstance(message, NodeFaultEvent):
            ack = Ack(node_id=NODE, ts=utc_now(), event_ids=[message.event_id])
            client.publish(topic_for(ack), encode(ack), qos=1)

    def of_type(self, kind: type[Any]) -> list[Any]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, kind)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_node_without_its_gpio_reports_a_node_fault_to_the_server_and_exits(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    try:
        RpiBackend().pin_factory.close()
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has real GPIO; the rpi backend loads")
    data_dir = tmp_path / "node"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node_id = "{NODE}"\nserial = "RPI-0042"\ndata_dir = "{data_dir}"\n'
        f'[mqtt]\nurl = "{broker.url}"\nreconnect_min_s = 0.1\n'
    )
    server = AckingServer(broker)
    try:
        assert server.subscribed.wait(10)
        env = {k: v for k, v in os.environ.items() if k != "NIGEHBAAN_HW"}
        result = subprocess.run(
            [
                sys.executable, "-m", "edge_agent.console", "--log-level", "CRITICAL",
                "agent", "--config", str(config), "--fault-report-s", "20",
            ],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    finally:
        server.close()
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().startswith("nigehbaan agent: hardware:")
    (fault,) = server.of_type(NodeFaultEvent)
    assert (fault.component, fault.code, fault.active) == ("hardware", "backend_unavailable", True)
    assert "no GPIO pin factory" in (fault.detail or "")
    (birth,) = server.of_type(Birth)
    assert birth.hardware == "unavailable"
    assert birth.capabilities == []  # nothing this node can do is working
    outbox = Outbox(data_dir / "outbox.sqlite3")
    try:
        assert outbox.depth == 0  # acknowledged, so not sent again at the next start
    finally:
        outbox.close()
