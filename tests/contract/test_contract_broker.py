"""Every message kind crosses the real Mosquitto harness intact.

Published with paho-mqtt, read back by an independent client
(`mosquitto_sub`), and validated against the exported JSON Schema.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker import ManagedBroker
from proto.catalog import GOLDEN_DIR, SCHEMA_DIR, message_kinds
from proto.codec import decode
from proto.topics import PREFIX, Topic

NODE = "lhr-gulberg-0042"


def _kind_topics() -> dict[str, tuple[str, bytes]]:
    out = {}
    for kind in message_kinds():
        raw = (GOLDEN_DIR / f"{kind.name}.json").read_bytes().rstrip(b"\n")
        name = kind.topic_name
        if kind.name == "reply":
            name = json.loads(raw)["request_id"]
        out[kind.name] = (str(Topic(NODE, kind.channel, name)), raw)
    return out


def test_every_message_kind_round_trips_through_mosquitto(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    expected = _kind_topics()
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h", broker.host,
            "-p", str(broker.port),
            "-t", f"{PREFIX}/{NODE}/#",
            "-q", "1",
            "-v",
            "-C", str(len(expected)),
            "-W", "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)  # let mosquitto_sub subscribe before we publish

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="contract-test")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in expected.values():
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()

    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err.decode()
    received: dict[str, bytes] = {}
    for line in out.decode().splitlines():
        topic, _, text = line.partition(" ")
        received[topic] = text.encode()

    assert set(received) == {t for t, _ in expected.values()}
    for name, (topic, payload) in expected.items():
        assert received[topic] == payload, name
        schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(json.loads(received[topic]))
        decode(topic, received[topic])
