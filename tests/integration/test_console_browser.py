"""The operator console in a real Chromium against a real server, broker and fake node.

The story: an operator signs in, a citizen presses the panic button on a
pillar, the alert appears in the queue without a reload, the operator
acknowledges it and the pillar is told help is coming. Around it: a refused
transition is shown to the operator, a wrong password is reported, the node
panel shows the pillar online, and the page fits a technician's phone.

Everything real: `nigehbaan server` in its own process, the session's
Mosquitto, Debian's Chromium driven by Playwright, and the pillar as a paho
client publishing proto messages.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, expect

from fleet_server.broker import ManagedBroker
from proto.codec import decode, encode
from proto.errors import ProtoError
from proto.ids import new_event_id
from proto.messages import Ack, AlertStateCommand, Birth, Firmware, PanicEvent, Status
from proto.topics import birth_topic, downlink_filters, event_topic, status_topic
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS

MQTT_TIMEOUT_S = 15.0
RESEND_AFTER_S = 1.0
OPERATOR = "op-console"
OPERATOR_PASSWORD = "pillar-" + secrets.token_hex(8)
AUDITOR = "aud-console"
AUDITOR_PASSWORD = "ledger-" + secrets.token_hex(8)

pytestmark = BROWSER_MARKS

_node_numbers = itertools.count(1)


# ---------------------------------------------------------------- the pillar


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


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real `nigehbaan server` with an operator and an auditor, made through its CLI."""
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("fleet"),
        broker_url=broker.url,
        env={"CONSOLE_OPERATOR_PW": OPERATOR_PASSWORD, "CONSOLE_AUDITOR_PW": AUDITOR_PASSWORD},
    )
    for name, role, password_env in [
        (OPERATOR, "operator", "CONSOLE_OPERATOR_PW"),
        (AUDITOR, "auditor", "CONSOLE_AUDITOR_PW"),
    ]:
        made = proc.run_cli("--create-user", name, "--role", role, "--password-env", password_env)
        assert made.returncode == 0, made.stderr
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pillar(broker: ManagedBroker, server: ServerProcess) -> Iterator[FakePillar]:
    """A fresh pillar per test, so one test's open alert is not joined by another's press."""
    node = FakePillar(broker, f"lhr-console-{next(_node_numbers):04d}")
    node.start()
    try:
        yield node
    finally:
        node.stop()


# ---------------------------------------------------------------- helpers


def sign_in(
    page: Page, server: ServerProcess, *, user: str = OPERATOR, password: str = OPERATOR_PASSWORD
) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("alert-table")).to_be_visible()
    # The feed is open before anything is pressed, so the alert must come live.
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")


def alert_row(page: Page, node_id: str) -> Any:
    return page.locator(f'[data-testid="alert-row"][data-node-id="{node_id}"]')


# ---------------------------------------------------------------- stories


def test_a_press_reaches_the_operator_live_and_acknowledging_tells_the_pillar(
    page: Page, server: ServerProcess, pillar: FakePillar, tmp_path: Path
) -> None:
    sign_in(page, server)

    pillar.press()

    row = alert_row(page, pillar.node_id)
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-fresh", "true")  # highlighted as new
    expect(row.get_by_test_id("alert-priority")).to_have_text("P1")
    expect(row.get_by_test_id("alert-type")).to_have_text("panic")
    expect(row.get_by_test_id("alert-state")).to_have_text("New")
    expect(row.get_by_test_id("alert-press-count")).to_have_text("1")
    expect(row.get_by_test_id("alert-place")).to_have_text("gulberg-main-blvd lahore-gulberg")
    page.screenshot(path=str(tmp_path / "queue-new-alert.png"), full_page=True)

    row.get_by_test_id("action-acknowledged").click()

    expect(row.get_by_test_id("alert-state")).to_have_text("Acknowledged")
    expect(row).not_to_have_attribute("data-fresh", "true")
    expect(row.get_by_test_id("action-acknowledged")).to_have_count(0)
    expect(row.get_by_test_id("action-dispatched")).to_be_visible()
    alert_id = row.get_attribute("data-alert-id")
    command = pillar.next_alert_state()
    while command.state != "acknowledged":
        command = pillar.next_alert_state()
    assert command.alert_id == alert_id
    assert command.node_id == pillar.node_id


def test_a_second_press_joins_the_open_alert_live(
    page: Page, server: ServerProcess, pillar: FakePillar
) -> None:
    sign_in(page, server)
    pillar.press()
    row = alert_row(page, pillar.node_id)
    expect(row.get_by_test_id("alert-press-count")).to_have_text("1")

    pillar.press()

    expect(row.get_by_test_id("alert-press-count")).to_have_text("2")
    expect(alert_row(page, pillar.node_id)).to_have_count(1)


def test_an_action_the_server_refuses_is_shown_and_the_row_corrected(
    browser: Browser, page: Page, server: ServerProcess, pillar: FakePillar
) -> None:
    """A second operator whose live feed is down acts on a stale row."""
    sign_in(page, server)
    pillar.press()
    row = alert_row(page, pillar.node_id)
    row.get_by_test_id("action-acknowledged").click()
    expect(row.get_by_test_id("alert-state")).to_have_text("Acknowledged")

    stale_context = browser.new_context()
    stale_context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        stale = stale_context.new_page()
        stale.route("**/api/v1/stream/alerts**", lambda route: route.abort())
        stale.goto(f"{server.base_url}/console/login")
        stale.get_by_label("User name").fill(OPERATOR)
        stale.get_by_label("Password").fill(OPERATOR_PASSWORD)
        stale.get_by_test_id("login-submit").click()
        expect(stale.get_by_test_id("stream-status")).to_have_attribute("data-state", "down")
        stale_row = alert_row(stale, pillar.node_id)
        expect(stale_row.get_by_test_id("alert-state")).to_have_text("Acknowledged")

        # The first operator dispatches; the stale page does not hear of it.
        row.get_by_test_id("action-dispatched").click()
        expect(row.get_by_test_id("alert-state")).to_have_text("Dispatched")
        expect(stale_row.get_by_test_id("alert-state")).to_have_text("Acknowledged")

        stale_row.get_by_test_id("action-dispatched").click()

        error = stale.get_by_test_id("message-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("Dispatch refused")
        expect(error).to_contain_text("cannot go from")  # the server's own reason
        expect(stale_row.get_by_test_id("alert-state")).to_have_text("Dispatched")
    finally:
        stale_context.close()


def test_an_auditor_may_look_but_the_server_refuses_their_acknowledge(
    page: Page, server: ServerProcess, pillar: FakePillar
) -> None:
    sign_in(page, server, user=AUDITOR, password=AUDITOR_PASSWORD)
    pillar.press()
    row = alert_row(page, pillar.node_id)

    row.get_by_test_id("action-acknowledged").click()

    error = page.get_by_test_id("message-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Acknowledge refused")
    expect(error).to_contain_text("auditor")
    expect(row.get_by_test_id("alert-state")).to_have_text("New")


def test_a_wrong_password_is_reported_on_the_sign_in_page(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_test_id("login-submit").click()

    expect(page.get_by_test_id("message-error")).to_be_visible()
    assert page.url.endswith("/console/login")
    expect(page.get_by_label("Password")).to_have_value("")


def test_the_queue_without_a_session_sends_the_operator_to_sign_in(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.base_url}/console/")
    expect(page.get_by_test_id("login-form")).to_be_visible()


def test_the_node_panel_shows_the_pillar_online(
    page: Page, server: ServerProcess, pillar: FakePillar
) -> None:
    sign_in(page, server)
    # The panel refreshes on its own; the pillar announced itself before sign-in
    # or shortly after, so wait for the periodic refresh if needed.
    node = page.locator(f'[data-testid="node-row"][data-node-id="{pillar.node_id}"]')
    expect(node).to_have_attribute("data-online", "true", timeout=30_000)
    expect(node.get_by_test_id("node-state")).to_have_text("online")


def test_the_queue_fits_a_phone_and_its_actions_are_reachable(
    browser: Browser, server: ServerProcess, pillar: FakePillar
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        phone = context.new_page()
        sign_in(phone, server)
        pillar.press()
        row = alert_row(phone, pillar.node_id)
        acknowledge = row.get_by_test_id("action-acknowledged")
        expect(acknowledge).to_be_visible()
        assert acknowledge.get_attribute("aria-label")
        overflow = phone.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"page is {overflow}px wider than the phone"
        box = acknowledge.bounding_box()
        assert box is not None
        assert box["height"] >= 40  # a thumb-sized target
        acknowledge.click()
        expect(row.get_by_test_id("alert-state")).to_have_text("Acknowledged")
    finally:
        context.close()
