"""An in-memory `Transport`: the node's uplink without a broker, for tests and dry runs.

It implements the `edge_agent.mqtt.Transport` interface and plays the broker
and the server side by hand: `connect` and `drop` a session (the uplink sees
``on_connect``/``on_disconnect`` exactly as with MQTT), `deliver` a downlink
message (an `Ack`, a command), and read what the node `published` as decoded
`proto` messages. Nothing is queued for a disconnected node (like QoS 1 with
no session: the outbox's resend is what delivers). Where the broker itself is
what a test is about, tests use the real Mosquitto instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_agent.mqtt import Transport, Will
from proto.codec import decode_uplink, encode, topic_for
from proto.messages import WireModel

__all__ = ["MemoryTransport", "Published", "memory_transport"]

M = TypeVar("M")


@dataclass(frozen=True)
class Published:
    """One message the node handed to the transport."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def message(self) -> Any:
        return decode_uplink(self.topic, self.payload).message


class MemoryTransport:
    """See the module docstring; `connect_on_run` False keeps the node offline at start."""

    def __init__(
        self,
        *,
        will: Callable[[], Will],
        on_connect: Callable[[bool], None],
        on_disconnect: Callable[[], None],
        on_message: Callable[[str, bytes], None],
        connect_on_run: bool = True,
    ) -> None:
        self._will = will
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_message = on_message
        self.connect_on_run = connect_on_run
        self.connected = False
        self.connects = 0
        self.published: list[Published] = []
        self.subscriptions: list[str] = []
        self.wills: list[Will] = []
        self._stopped = asyncio.Event()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if not self.connected:
            return False
        self.published.append(Published(topic, payload, qos, retain))
        return True

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        self.subscriptions.append(topic_filter)

    async def run(self) -> None:
        if self.connect_on_run:
            self.connect()
        await self._stopped.wait()

    def stop(self) -> None:
        self.connected = False
        self._stopped.set()

    def connect(self, *, session_present: bool = False) -> None:
        """The broker accepted the node (the will is made first, as with paho)."""
        self.wills.append(self._will())
        self.connected = True
        self.connects += 1
        self._on_connect(session_present)

    def drop(self) -> None:
        """The link went away."""
        if self.connected:
            self.connected = False
            self._on_disconnect()

    def deliver(self, message: WireModel) -> None:
        """A downlink message from the server (an ack, a command)."""
        self._on_message(topic_for(message), encode(message))

    def deliver_raw(self, topic: str, payload: bytes) -> None:
        self._on_message(topic, payload)

    def messages(self, kind: type[M]) -> list[M]:
        """What the node published, decoded, of one message class."""
        found = []
        for item in self.published:
            message = item.message()
            if isinstance(message, kind):
                found.append(message)
        return found


def memory_transport(*, connect_on_run: bool = True) -> Callable[[Any], Transport]:
    """A transport factory for `build_node` that makes a `MemoryTransport` for the uplink."""

    def make(uplink: Any) -> Transport:
        return MemoryTransport(
            will=uplink.will,
            on_connect=uplink.on_connect,
            on_disconnect=uplink.on_disconnect,
            on_message=uplink.on_message,
            connect_on_run=connect_on_run,
        )

    return make
