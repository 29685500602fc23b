"""A node enrolled through the bundle flow connects over mutual TLS, renews, and loses nothing.

Real Mosquitto with a TLS listener (client certificates required, the CN is
the MQTT user name), the real agent on a mock pin, an enrollment fake that
issues short-lived certificates, and a small acking subscriber in the
server's place (the fleet server's own enrollment API is tested end to end in
tests/e2e/test_e2e_enrollment.py).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import load_config_file
from edge_agent.enroll import EnrollmentClient, provision
from edge_agent.node import build_node
from edge_agent.renewal import CertificateRenewer
from fleet_server.broker import ManagedBroker, free_port
from fleet_server.broker.config import BrokerConfig, Listener, TlsSettings
from fleet_server.pki.ca import CLOCK_SKEW
from hardware.backends import SimBackend
from hardware.button import SimButton
from proto.codec import encode
from proto.messages import Ack
from proto.topics import parse_topic
from tests.support.enrollment import FakeEnrollmentServer, bundle_for, issued
from tests.support.pki import FleetCA
from tests.support.polling import until

pytestmark = [pytest.mark.broker]


@pytest.fixture
def tls_broker(ca: FleetCA, tmp_path: Path) -> Iterator[ManagedBroker]:
    pki = tmp_path / "broker-pki"
    files = ca.server_files(pki, "broker")
    tls = TlsSettings(cafile=ca.write_ca(pki / "ca.pem"), certfile=files.cert, keyfile=files.key)
    config = BrokerConfig(
        data_dir=tmp_path / "broker", listeners=(Listener(port=free_port(), tls=tls),)
    )
    broker = ManagedBroker(config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class AckingServer:
    """Stands in for the fleet server: acks every event it receives, records ids."""

    def __init__(self, ca: FleetCA, broker: ManagedBroker, work: Path) -> None:
        files = ca.client_files(work / "fleet-server", "fleet-server")
        self.event_ids: list[str] = []
        self.lock = threading.Lock()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fleet-server-test")
        client.tls_set(ca_certs=str(ca.write_ca(work / "fs-ca.pem")), certfile=str(files.cert),
                       keyfile=str(files.key), cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("nb/v1/+/event/+", qos=1)
        client.on_message = self._on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        import json

        event_id = json.loads(msg.payload)["event_id"]
        node_id = parse_topic(msg.topic).node_id
        with self.lock:
            self.event_ids.append(event_id)
        ack = Ack(node_id=node_id, ts=_now(), event_ids=[event_id])
        client.publish(f"nb/v1/{node_id}/ack", encode(ack), qos=1)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


async def press(agent: Agent) -> None:
    button = agent.button
    assert isinstance(button, SimButton)
    button.press()
    await asyncio.sleep(0.08)
    button.release()


def test_an_enrolled_node_renews_its_short_lived_certificate_and_loses_no_press(
    ca: FleetCA, fake_server: FakeEnrollmentServer, tls_broker: ManagedBroker, tmp_path: Path
) -> None:
    fake_server.ca = ca
    # The product CA back-dates not_before by CLOCK_SKEW (5 min), so a third of
    # the validity is left 2/3·(300 + L) − 300 s after issue: L = 159 s makes
    # the first certificate due for renewal about 6 s after it is issued.
    lifetimes = iter([3 * (CLOCK_SKEW.total_seconds() + 6.0) / 2 - CLOCK_SKEW.total_seconds()])

    def answer(method: str, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        answer = issued(ca, body, node_id="sim-0001", lifetime_s=next(lifetimes, 3600.0))
        answer["broker_url"] = tls_broker.url
        answer["api_url"] = fake_server.url
        return 200, answer, {}

    fake_server.answer = answer
    data_dir = tmp_path / "node"
    provision(
        bundle_for(fake_server),
        data_dir=data_dir,
        serial="SIM-0001",
        config_overrides={
            "hardware": {"type": "sim"},
            "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            "identity": {"renew_check_interval_s": 0.5, "renew_retry_s": 1.0},
        },
    )
    config = load_config_file(data_dir / "agent.toml")
    assert config.mqtt.url.startswith("mqtts://")
    server = AckingServer(ca, tls_broker, tmp_path)
    # Renewal is one of the node's components: it runs and stops with the node.
    renewer = CertificateRenewer(
        client_factory=lambda: EnrollmentClient(fake_server.url, ca_chain_pem=ca.pem)
    )
    agent = Agent.wrap(build_node(config, backend=SimBackend(), renewal=renewer))
    pressed_during_renewal: list[asyncio.Task[None]] = []

    async def story() -> None:
        task = asyncio.ensure_future(agent.run())
        try:
            await until(lambda: agent.connected, what="mqtts connection")
            await press(agent)
            await until(lambda: agent.outbox_depth == 0, what="first press acked")
            assert renewer.renewals == 0
            # Press at the moment the transport drops the old session for the new cert.
            transport: Any = agent.transport
            reload = transport.reload_tls

            def reload_and_press() -> None:
                reload()
                pressed_during_renewal.append(asyncio.ensure_future(press(agent)))

            transport.reload_tls = reload_and_press
            await until(lambda: renewer.renewals == 1, what="renewal", timeout=15)
            await until(
                lambda: transport.connects == 2 and agent.connected and agent.outbox_depth == 0,
                what="reconnect on the renewed certificate",
            )
            await pressed_during_renewal[0]  # two presses on one button must not overlap
            await press(agent)
            await until(lambda: agent.outbox_depth == 0, what="last press acked")
        finally:
            agent.stop()
            await task

    try:
        asyncio.run(story())
    finally:
        server.stop()
    assert len(pressed_during_renewal) == 1
    assert agent.transport is not None
    assert agent.transport.connects == 2  # type: ignore[attr-defined]
    assert len(agent.panic_event_ids) == 3
    with server.lock:
        assert set(agent.panic_event_ids) <= set(server.event_ids)
    log = tls_broker.log_text()
    assert "sim-0001" in log
    renewed = fake_server.requests[-1]
    assert renewed[1] == "/api/v1/enroll/renew"
    _ = timedelta
