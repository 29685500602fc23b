"""The broker harness: generated config, start, crash, restart, and its safety rules."""

from __future__ import annotations

import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker import BrokerConfig, Listener, ManagedBroker, TlsSettings
from fleet_server.broker.config import BrokerConfigError
from fleet_server.broker.process import BrokerError


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def test_plain_listener_off_loopback_is_refused() -> None:
    with pytest.raises(BrokerConfigError, match="loopback"):
        Listener(port=1883, bind_address="0.0.0.0", allow_anonymous=True)


def test_tls_listener_renders_certificate_identity_and_crl(tmp_path: Path) -> None:
    tls = TlsSettings(
        cafile=tmp_path / "ca.pem",
        certfile=tmp_path / "broker.pem",
        keyfile=tmp_path / "broker.key",
        crlfile=tmp_path / "fleet.crl",
    )
    config = BrokerConfig(
        data_dir=tmp_path,
        listeners=(
            Listener(port=18830, allow_anonymous=True),
            Listener(port=18883, bind_address="0.0.0.0", tls=tls, acl_file=tmp_path / "acl"),
        ),
    )
    text = config.render()
    tls_block = text.split("listener 18883 0.0.0.0", 1)[1]
    assert "require_certificate true" in tls_block
    assert "use_identity_as_username true" in tls_block
    assert f"crlfile {tmp_path / 'fleet.crl'}" in tls_block
    assert f"acl_file {tmp_path / 'acl'}" in tls_block
    assert "allow_anonymous false" in tls_block


def test_broker_starts_accepts_mqtt_and_survives_a_kill_and_restart(tmp_path: Path) -> None:
    broker = ManagedBroker.loopback(tmp_path)
    broker.start()
    try:
        first_pid = broker.pid
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="harness-test")
        assert client.connect(broker.host, broker.port) == 0
        client.disconnect()
        broker.kill()
        assert not broker.running
        assert not _accepts(broker.host, broker.port)
        broker.start()
        assert broker.pid != first_pid
        assert _accepts(broker.host, broker.port)
    finally:
        broker.stop()
    assert "mosquitto version" in broker.log_text()


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    config = BrokerConfig(
        data_dir=tmp_path,
        listeners=(Listener(port=18831, allow_anonymous=True),),
        extra_lines=("this_is_not_an_option true",),
    )
    with pytest.raises(BrokerError, match="exited during start-up"):
        ManagedBroker(config).start(timeout=5)
