"""What the console's browser stories share: a pillar on the wire, a server with users, sign-in.

`FakePillar` is a panic-button node reduced to its wire behaviour (status,
birth, a press re-sent until acked, the commands it is sent), a paho client
publishing proto messages. `console_server` starts a real `nigehbaan server`
with one account per role; `seed_alerts` writes alerts straight into that
server's database, for stories that need a busy night behind them.
"""

from __future__ import annotations

import queue
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Locator, Page, expect
from sqlmodel import Session

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import Alert, AlertTransition
from proto.codec import decode, encode
from proto.errors import ProtoError
from proto.ids import new_event_id
from proto.messages import Ack, AlertStateCommand, Birth, Firmware, PanicEvent, Status
from proto.topics import birth_topic, downlink_filters, event_topic, status_topic
from simulators.server_process import ServerProcess

MQTT_TIMEOUT_S = 15.0
RESEND_AFTER_S = 1.0


class FakePillar:
    """A panic-button node reduced to its wire behaviour: birth, press, commands."""

    def __init__(self, broker: ManagedBroker, node_id: str) -> None:
        self.broker = broker
        self.node_id = node_id
        self.alert_states: queue.Queue[AlertStateCommand] = queue.Queue()
        self.acked: queue.Queue[str] = queue.Queue()
        self._subscribed: queue.Queue[bool] = queue.Queue()
        self._seq = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        # Subscribing here renews the subscription after a reconnect.
        client.subscribe([(topic, 1) for topic in downlink_filters(self.node_id)])

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.put(True)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            message = decode(msg.topic, bytes(msg.payload))
        except ProtoError:
            return
        if isinstance(message, AlertStateCommand):
            self.alert_states.put(message)
        elif isinstance(message, Ack):
            for event_id in message.event_ids:
                self.acked.put(event_id)

    def start(self) -> None:
        self._client.connect(self.broker.host, self.broker.port)
        self._client.loop_start()
        self._subscribed.get(timeout=MQTT_TIMEOUT_S)
        now = datetime.now(timezone.utc)
        status = Status(node_id=self.node_id, ts=now, state="online", bd_seq=1)
        birth = Birth(
            node_id=self.node_id,
            ts=now,
            bd_seq=1,
            serial=f"NB-TEST-{self.node_id}",
            hardware="test-pillar",
            firmware=Firmware(version="0.1.0"),
            capabilities=["panic_button", "indicator"],
            config_hash="0" * 64,
            site_id="gulberg-main-blvd",
            district="lahore-gulberg",
        )
        self._publish(status_topic(self.node_id), encode(status), retain=True)
        self._publish(birth_topic(self.node_id), encode(birth))

    def press(self) -> str:
        """One panic press, re-sent until the server acks it, as a node's outbox does.

        The re-send matters at start-up: a press published before the server's
        subscription is in place is not lost on a real node, and must not be here.
        """
        self._seq += 1
        event = PanicEvent(
            node_id=self.node_id,
            ts=datetime.now(timezone.utc),
            event_id=new_event_id(),
            seq=self._seq,
        )
        deadline = time.monotonic() + MQTT_TIMEOUT_S
        while time.monotonic() < deadline:
            self._publish(event_topic(self.node_id, "panic"), encode(event))
            try:
                while self.acked.get(timeout=RESEND_AFTER_S) != event.event_id:
                    pass
            except queue.Empty:
                continue
            return event.event_id
        raise AssertionError(f"server never acked panic event {event.event_id}")

    def next_alert_state(self, *, timeout: float = MQTT_TIMEOUT_S) -> AlertStateCommand:
        return self.alert_states.get(timeout=timeout)

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(MQTT_TIMEOUT_S)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# ---------------------------------------------------------------- the server


@dataclass(frozen=True)
class Account:
    """A console user the server was started with."""

    username: str
    role: str
    password: str


@contextmanager
def console_server(
    broker: ManagedBroker, data_dir: Path, accounts: Sequence[Account]
) -> Iterator[ServerProcess]:
    """A real `nigehbaan server` with these accounts, made through its CLI.

    Each server gets an MQTT client id of its own: on the session's shared
    broker, a persistent session named "fleet-server" would hand this server
    the events other test files published after an earlier server left.
    """
    env = {f"CONSOLE_PW_{n}": account.password for n, account in enumerate(accounts)}
    env["NIGEHBAAN_MQTT_CLIENT_ID"] = f"fleet-server-{secrets.token_hex(6)}"
    proc = ServerProcess(data_dir=data_dir, broker_url=broker.url, env=env)
    for n, account in enumerate(accounts):
        made = proc.run_cli(
            "--create-user",
            account.username,
            "--role",
            account.role,
            "--password-env",
            f"CONSOLE_PW_{n}",
        )
        assert made.returncode == 0, made.stderr
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def sign_in(page: Page, server: ServerProcess, account: Account) -> None:
    """Sign in through the form and wait until the queue's live feed is open."""
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("User name").fill(account.username)
    page.get_by_label("Password").fill(account.password)
    page.get_by_test_id("login-submit").click()
    # The queue's heading, not its table: on a narrow screen an empty table has no height.
    expect(page.get_by_role("heading", name="Open alerts")).to_be_visible()
    # The feed is open before anything is pressed, so an alert must come live.
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")


def alert_row(page: Page, node_id: str) -> Locator:
    return page.locator(f'[data-testid="alert-row"][data-node-id="{node_id}"]')


def seed_alerts(server: ServerProcess, alerts: Sequence[Alert], *, note: str = "") -> None:
    """Write alerts (and, for closed ones, the closing transition) into the server's database.

    The server reads them like any other row; only the live feed does not hear
    of them, so a page shows them after its next list load.
    """
    engine = make_engine(server.db_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            for alert in alerts:
                session.add(alert)
            session.flush()
            for alert in alerts:
                session.add(
                    AlertTransition(
                        alert_id=alert.id,
                        from_state=None,
                        to_state="new",
                        actor="system",
                        at=alert.received_at,
                    )
                )
                if alert.state != "new":
                    session.add(
                        AlertTransition(
                            alert_id=alert.id,
                            from_state="new",
                            to_state=alert.state,
                            actor="user:seed",
                            note=note,
                            at=alert.received_at + timedelta(minutes=5),
                        )
                    )
            session.commit()
    finally:
        engine.dispose()


def alert_at(
    node_id: str,
    *,
    minutes_ago: float,
    state: str = "new",
    alert_type: str = "panic",
    severity: str = "P1",
    district: str = "lahore-gulberg",
) -> Alert:
    """An alert row as ingest would have made it, `minutes_ago` before now."""
    received = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    closed = received + timedelta(minutes=5) if state != "new" else None
    return Alert(
        node_id=node_id,
        type=alert_type,
        severity=severity,
        state=state,
        district=district,
        site_id=f"{node_id}-site",
        received_at=received,
        updated_at=closed or received,
        resolved_at=closed if state == "resolved" else None,
        closed_at=closed,
    )
