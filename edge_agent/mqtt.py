"""The node's MQTT transport: paho-mqtt (MQTT 5) driven by the asyncio loop.

The agent sees only the small `Transport` interface (`publish`, `subscribe`,
`run`, `stop`, `connected`); sockets stay in here.

No thread per client: paho's external-loop hooks register the client's
socket with the running event loop (``on_socket_open`` → ``add_reader`` →
``loop_read``; ``on_socket_register_write`` → ``add_writer`` →
``loop_write``), and one small task calls ``loop_misc`` every second for
keepalive — the way aiomqtt drives paho. Only the blocking TCP (and TLS)
connect runs in the loop's default executor, a shared pool, so a broker that
is slow to answer cannot stall the button loop; socket callbacks from that
pool are handed back to the loop thread.

Session: client id = node id, ``clean_start=False`` with a session expiry so
the broker keeps the subscription and queues QoS 1 commands while the node
is away. Subscriptions are (re)made in ``on_connect``. The last-will (built
fresh before every connect attempt, so it carries that attempt's ``bd_seq``)
is the retained offline `Status`. `stop` disconnects with reason code 4
("disconnect with will message"), so the broker publishes the offline status
on a clean shutdown too. Reconnects back off exponentially with full jitter
so a fleet does not reconnect in lock-step after a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.tls import client_context, reload_client_certificate

__all__ = ["MqttTransport", "TlsFiles", "Transport", "Will"]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
_MISC_INTERVAL_S = 1.0
_STOP_FLUSH_S = 2.0


@dataclass(frozen=True)
class Will:
    """The last-will message the broker publishes if the node vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class TlsFiles:
    """Files for mutual TLS (mqtts://); see `MqttTransport.reload_tls` for renewal."""

    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


class Transport(Protocol):
    """What the agent needs from a message transport."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Hand a message to the transport; False when it cannot be sent now."""
        ...

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        """Subscribe now and after every reconnect."""
        ...

    async def run(self) -> None:
        """Connect and keep reconnecting until `stop`."""
        ...

    def stop(self) -> None:
        """Ask `run` to disconnect and return."""
        ...


class MqttTransport:
    """One paho MQTT 5 client on the running asyncio loop."""

    def __init__(
        self,
        *,
        client_id: str,
        host: str,
        port: int,
        keepalive_s: int = 30,
        session_expiry_s: int = 86_400,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        tls: TlsFiles | None = None,
        will: Callable[[], Will] | None = None,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_max_s, reconnect_min_s)
        self._will = will
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_message = on_message
        self._subscriptions: dict[str, int] = {}
        self._connected = False
        self._closing = False  # we asked the broker to end this session
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._session_over: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._fds: set[int] = set()
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self._failure_streak = 0

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self._tls = tls
        self._ssl_context: ssl.SSLContext | None = None
        if tls is not None:
            # Our own context (not tls_set) so a renewed certificate can be
            # loaded into it later: paho wraps every new socket with it.
            self._ssl_context = client_context(
                ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file
            )
            client.tls_set_context(self._ssl_context)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_register_write
        client.on_socket_unregister_write = self._socket_unregister_write
        self._client = client

    # ------------------------------------------------------------ interface

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect.

        False as soon as the node itself ends the session (`reload_tls`,
        `stop`), though the DISCONNECT is written on a later turn of the loop:
        a message published then would go out behind it and be dropped, and
        a caller waiting for the next session must not mistake the old one
        for it. Events written meanwhile wait in the outbox, which sends them
        on the next connect (as `MemoryTransport` does).
        """
        return self._connected and not self._closing

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if not self.connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("%s: publish to %s failed: %s", self.client_id, topic, info.rc)
            return False
        return True

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        self._subscriptions[topic_filter] = qos
        if self._connected:
            self._client.subscribe(topic_filter, qos=qos)

    def reload_tls(self) -> None:
        """Load the (renewed) certificate files and reconnect with them.

        The disconnect is a normal one (no will, so no offline flap); `run`
        reconnects after its short backoff and the outbox re-sends anything
        unacked, so nothing is lost.
        """
        tls = self._tls
        if tls is None or self._ssl_context is None or tls.cert_file is None:
            return
        reload_client_certificate(self._ssl_context, cert_file=tls.cert_file, key_file=tls.key_file)
        logger.info("%s: reconnecting with the renewed certificate", self.client_id)
        if self._connected:
            self._closing = True
            self._client.disconnect()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called."""
        return self._stop_requested

    def stop(self) -> None:
        self._stop_requested = True
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._connected:
            # Reason 4: the broker publishes our will (retained offline status).
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            )
            # If the DISCONNECT cannot be written, give up waiting for it.
            if self._loop is not None:
                self._loop.call_later(_STOP_FLUSH_S, self._end_session)
        else:
            self._in_loop(self._end_session)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        ceiling = self.reconnect_min_s
        try:
            while not self._stop_requested:
                self._session_over = asyncio.Event()
                established = await self._session()
                if self.stopping:
                    break
                if established:
                    ceiling = self.reconnect_min_s
                delay = random.uniform(self.reconnect_min_s, ceiling)
                ceiling = min(self.reconnect_max_s, ceiling * 2)
                logger.debug("%s: reconnecting in %.2fs", self.client_id, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self._close_socket()

    # ------------------------------------------------------------- sessions

    async def _session(self) -> bool:
        """One connection: connect, run until it drops. True if CONNACK succeeded."""
        assert self._loop is not None
        assert self._session_over is not None
        self._established = False
        self._closing = False
        if self._will is not None:
            will = self._will()
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    self.host,
                    self.port,
                    keepalive=self.keepalive_s,
                    clean_start=False,
                    properties=props,
                ),
            )
        except (OSError, ValueError) as exc:
            self.connect_failures += 1
            self._failure_streak += 1
            # Loud once per outage, quiet while it lasts (a fleet retries a lot).
            level = logging.WARNING if self._failure_streak == 1 else logging.DEBUG
            logger.log(
                level, "%s: cannot connect to %s:%s: %s", self.client_id, self.host, self.port, exc
            )
            return False
        misc = asyncio.ensure_future(self._misc())
        try:
            await self._session_over.wait()
        except asyncio.CancelledError:
            self._close_socket()
            raise
        finally:
            misc.cancel()
        return self._established

    async def _misc(self) -> None:
        """Keepalive pings and keepalive-timeout detection (paho's loop_misc)."""
        while True:
            await asyncio.sleep(_MISC_INTERVAL_S)
            self._client.loop_misc()

    def _close_socket(self) -> None:
        """Drop the connection without a DISCONNECT (shutdown or cancellation)."""
        for fd in list(self._fds):
            self._unwatch(fd)
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._connected = False

    # ------------------------------------------------------ paho callbacks

    _established = False

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.connect_failures += 1
            logger.warning("%s: broker refused connection: %s", self.client_id, reason_code)
            return
        self._connected = True
        self._established = True
        self._failure_streak = 0
        self.connects += 1
        session_present = bool(getattr(flags, "session_present", False))
        logger.info("%s: connected (session present: %s)", self.client_id, session_present)
        for topic_filter, qos in self._subscriptions.items():
            client.subscribe(topic_filter, qos=qos)
        if self._on_connect is not None:
            try:
                self._on_connect(session_present)
            except Exception:
                logger.exception("%s: on_connect handler failed", self.client_id)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        self._connected = False
        if was_connected:
            self.disconnects += 1
            logger.info("%s: disconnected: %s", self.client_id, reason_code)
            if self._on_disconnect is not None:
                try:
                    self._on_disconnect()
                except Exception:
                    logger.exception("%s: on_disconnect handler failed", self.client_id)
        self._in_loop(self._end_session)

    def _end_session(self) -> None:
        if self._session_over is not None:
            self._session_over.set()

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:
            # A bad message must never take the connection down.
            logger.exception("%s: message handler failed for %s", self.client_id, msg.topic)

    # ------------------------------------------------ socket ↔ event loop

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop thread (paho calls some hooks from the connect pool)."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle on: a panic event written while the previous
        # packet is unacknowledged would wait for the broker's delayed ACK
        # (up to 40 ms on Linux).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self._in_loop(lambda: self._watch_read(fd))

    def _socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._unwatch(fd))

    def _socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        self._in_loop(lambda: self._watch_write(fd))

    def _socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()

        def unregister() -> None:
            if self._loop is not None:
                self._loop.remove_writer(fd)

        self._in_loop(unregister)

    def _watch_read(self, fd: int) -> None:
        assert self._loop is not None
        self._fds.add(fd)
        self._loop.add_reader(fd, self._readable)

    def _watch_write(self, fd: int) -> None:
        assert self._loop is not None
        if fd in self._fds:
            self._loop.add_writer(fd, self._writable)

    def _unwatch(self, fd: int) -> None:
        assert self._loop is not None
        if fd in self._fds:
            self._fds.discard(fd)
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def _readable(self) -> None:
        self._client.loop_read()

    def _writable(self) -> None:
        self._client.loop_write()
