"""A stand-in for the fleet server on a real Mosquitto, and helpers to run agents against it.

A paho client decodes every uplink message with proto and, when told to,
acknowledges events the way the real server does after its database commit."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from fleet_server.broker import ManagedBroker
from hardware import SimBackend, SimButton
from proto.codec import decode_uplink, encode, topic_for
from proto.messages import (
    Ack,
    CommandBase,
    EventBase,
    PanicEvent,
    Reply,
    utc_now,
)
from proto.topics import PREFIX, Channel, cmd_topic
from tests.support import polling


class FleetStandIn:
    """Just enough server: records uplink messages, acks events when asked."""

    def __init__(self, broker: ManagedBroker, node_id: str, *, auto_ack: bool = True) -> None:
        self.node_id = node_id
        self.auto_ack = auto_ack
        self._lock = threading.Lock()
        self._messages: list[Any] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"srv-{node_id}", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"{PREFIX}/{self.node_id}/#", qos=1)

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if f"/{Channel.CMD.value}/" in msg.topic or msg.topic.endswith(f"/{Channel.ACK.value}"):
            return  # our own downlink traffic
        envelope = decode_uplink(msg.topic, bytes(msg.payload))
        with self._lock:
            self._messages.append(envelope.message)
        if self.auto_ack and isinstance(envelope.message, EventBase):
            self.ack([envelope.message.event_id])

    def ack(self, event_ids: list[str]) -> None:
        ack = Ack(node_id=self.node_id, ts=utc_now(), event_ids=event_ids)
        self.client.publish(topic_for(ack), encode(ack), qos=1)

    def send(self, command: CommandBase) -> None:
        self.client.publish(topic_for(command), encode(command), qos=1)

    def send_raw(self, name: str, payload: bytes) -> None:
        self.client.publish(cmd_topic(self.node_id, name), payload, qos=1)

    def of_type(self, kind: type[Any]) -> list[Any]:
        with self._lock:
            return [m for m in self._messages if isinstance(m, kind)]

    def reply_to(self, request_id: str) -> Reply | None:
        replies = [r for r in self.of_type(Reply) if r.request_id == request_id]
        return replies[-1] if replies else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 25))


async def eventually(check: Callable[[], object], what: str, *, timeout: float = 8.0) -> None:
    """`polling.until` with the agent tests' shorter default timeout."""
    await polling.until(check, what, timeout=timeout)


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.ensure_future(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 8)


def node_config(broker: ManagedBroker, tmp_path: Path, **outbox: Any) -> dict[str, Any]:
    node_id = f"lhr-{uuid.uuid4().hex[:10]}"
    return {
        "node_id": node_id,
        "serial": f"SN-{node_id}",
        "site_id": "gulberg-pillar-7",
        "district": "lahore",
        "data_dir": str(tmp_path / node_id),
        "mqtt": {
            "url": broker.url,
            "keepalive_s": 5,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.3,
        },
        "outbox": {"resend_after_s": 60.0, **outbox},
        "hardware": {"type": "sim"},
    }


def make_agent(config: dict[str, Any]) -> tuple[Agent, SimButton]:
    agent = Agent.from_dict(config, backend=SimBackend())
    assert isinstance(agent.button, SimButton)
    return agent, agent.button


async def press_once(button: SimButton) -> None:
    """A citizen's press: down past the debounce, then up long enough to count as up."""
    button.press()
    await asyncio.sleep(0.1)
    button.release()
    await asyncio.sleep(0.1)


def panics(server: FleetStandIn) -> list[PanicEvent]:
    return server.of_type(PanicEvent)


def kick(broker: ManagedBroker, client_id: str) -> None:
    """Take over a node's MQTT session for a moment, so the broker drops the node."""
    impostor = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    impostor.connect(broker.host, broker.port, keepalive=10)
    impostor.loop_start()
    try:
        impostor.publish(f"{PREFIX}/kick", b"", qos=1).wait_for_publish(5)
    finally:
        impostor.disconnect()
        impostor.loop_stop()
