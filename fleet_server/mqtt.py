"""The fleet server's one MQTT client: a small transport behind `publish`/`stop`.

paho-mqtt runs its network loop in its own thread (`loop_start`), so the
asyncio loop serving HTTP never waits on a socket, and the ingest worker's
thread calls `publish` directly (paho's publish is thread-safe). The session
is persistent (MQTT 5, clean_start false, a session expiry): while the server
is down or restarting, the broker keeps queueing node events for
`fleet-server`, and nothing published at QoS 1 in the meantime is lost.
Subscriptions are (re)made in the connect handler so a reconnect to a broker
that lost its state still subscribes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from proto.topics import uplink_filters

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
# Server → broker QoS 1 publishes (acks, commands) in flight at once; must not exceed
# the Receive Maximum the broker advertises (`BrokerConfig.max_inflight_messages`).
MAX_INFLIGHT = 100


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://host:port` or `mqtts://host:port` → (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported broker URL scheme in {url!r}; use mqtt:// or mqtts://")
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls


def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """Turn off Nagle on the broker connection (paho leaves it on).

    Acks and commands are small packets sent one by one; with Nagle each one
    written while the previous is unacknowledged waits for the broker's
    delayed ACK (up to 40 ms on Linux).
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttLink:
    """Connects, subscribes to every node's uplink and hands messages to `on_message`."""

    def __init__(
        self,
        *,
        url: str,
        on_message: MessageHandler,
        client_id: str = "fleet-server",
        session_expiry_s: int = 3600,
        keepalive_s: int = 30,
        filters: list[str] | None = None,
        tls_files: tuple[str, str, str] | None = None,
    ) -> None:
        """`tls_files` = (CA chain, client certificate, client key) for `mqtts://` with mTLS."""
        self.host, self.port, tls = parse_broker_url(url)
        self.url = url
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._on_message = on_message
        self._filters = filters if filters is not None else uplink_filters()
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._stopping = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if tls and tls_files is not None:
            ca_chain, certfile, keyfile = tls_files
            self._client.tls_set(ca_certs=ca_chain, certfile=certfile, keyfile=keyfile)
        elif tls:
            self._client.tls_set()
        # MQTT 5 (3.3.4): no more unacknowledged QoS 1 publishes than the broker's
        # Receive Maximum (the managed Mosquitto advertises its max_inflight_messages,
        # 100). paho 2.2 does not apply the CONNACK's value itself, so it is set here.
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message
        self._client.on_socket_open = _no_delay

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until `stop`."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self.host, self.port, keepalive=self._keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()
        logger.info("MQTT connecting to %s as a persistent session", self.url)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Queue a message; paho sends it (and retries QoS 1) from its own thread."""
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            logger.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def stop(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.error("MQTT connect to %s refused: %s", self.url, reason)
            return
        logger.info("MQTT connected to %s (session present: %s)", self.url, flags.session_present)
        receive_max = getattr(_props, "ReceiveMaximum", None)
        if isinstance(receive_max, int) and receive_max < MAX_INFLIGHT:
            logger.warning(
                "broker %s allows %s QoS 1 messages in flight, fewer than the %s this link "
                "sends; lower fleet_server.mqtt.MAX_INFLIGHT",
                self.url,
                receive_max,
                MAX_INFLIGHT,
            )
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._filters])
        self.connected.set()

    def _handle_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            logger.error("MQTT subscription refused: %s", failed)
        else:
            self.subscribed.set()

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if self._stopping:
            logger.info("MQTT disconnected from %s", self.url)
            return
        logger.warning("MQTT disconnected from %s: %s; paho will reconnect", self.url, reason)

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:
            # Never let one message kill paho's network thread.
            logger.exception("ingest hand-off failed for %s", msg.topic)
