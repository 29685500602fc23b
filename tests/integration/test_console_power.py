"""The console's power page in a real Chromium against a real server and broker.

The story: pillars report their power over MQTT; an operator opens the
console, follows the header's "Power" link, sees the site that will not last
the night at the top of the fleet table, and its 48-hour chart drawn by the
server as SVG. Everything the page loads comes from the server itself (no
CDN, no chart library).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from proto.codec import encode
from proto.messages import Birth, Firmware, GeoPoint, PowerTelemetry, Status, Telemetry
from proto.topics import birth_topic, status_topic, telemetry_topic
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS

OPERATOR = "op-power"
PASSWORD = "sunrise-" + secrets.token_hex(8)
# 21:00 in Lahore: the night ahead is almost ten hours long.
EVENING = datetime(2025, 12, 1, 16, 0, tzinfo=timezone.utc)

pytestmark = BROWSER_MARKS
_numbers = itertools.count(1)


def report_power(broker: ManagedBroker, node_id: str, readings: list[dict[str, Any]]) -> None:
    """A pillar's birth and a few hours of power telemetry, published like a node does."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        birth = Birth(
            node_id=node_id,
            ts=EVENING,
            bd_seq=1,
            serial=f"S-{node_id}",
            hardware="test-pillar",
            firmware=Firmware(version="0.1.0"),
            capabilities=["panic_button", "power_monitor"],
            config_hash="0" * 64,
            site_id=f"site-{node_id}",
            district="lahore-gulberg",
            location=GeoPoint(lat=31.52, lon=74.36),
        )
        status = Status(node_id=node_id, ts=EVENING, state="online", bd_seq=1)
        messages = [(status_topic(node_id), encode(status)), (birth_topic(node_id), encode(birth))]
        for i, power in enumerate(readings):
            at = EVENING - timedelta(hours=len(readings) - 1 - i)
            report = Telemetry(node_id=node_id, ts=at, uptime_s=1.0, power=PowerTelemetry(**power))
            messages.append((telemetry_topic(node_id), encode(report)))
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("power-console"),
        broker_url=broker.url,
        env={"POWER_OP_PW": PASSWORD},
    )
    made = proc.run_cli("--create-user", OPERATOR, "--role", "operator", "--password-env",
                        "POWER_OP_PW")  # fmt: skip
    assert made.returncode == 0, made.stderr
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def sign_in(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("alert-table")).to_be_visible()


def draining(autonomy: float, soc: float) -> dict[str, Any]:
    return {"panel_w": 0.0, "battery_v": 12.9, "battery_a": -2.0, "battery_soc": soc,
            "battery_temp_c": 18.0, "load_w": 26.0, "mains_present": False,
            "autonomy_h": autonomy, "policy_step": 1}  # fmt: skip


def test_the_operator_sees_the_site_that_will_not_last_the_night_and_its_chart(
    page: Page, server: ServerProcess, broker: ManagedBroker, tmp_path: Path
) -> None:
    n = next(_numbers)
    risky, fine = f"lhr-risk-{n:04d}", f"lhr-fine-{n:04d}"
    report_power(broker, risky, [draining(9.0 - i, 0.5 - i / 20) for i in range(6)])
    report_power(broker, fine, [draining(60.0, 0.95) for _ in range(3)])
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(server.base_url) else foreign.append(request.url)
        ),
    )
    sign_in(page, server)

    page.get_by_test_id("nav-power").click()

    row = page.locator(f'[data-testid="power-row"][data-node-id="{risky}"]')
    deadline = time.monotonic() + 20
    while not row.count() and time.monotonic() < deadline:  # ingest is asynchronous
        page.get_by_test_id("refresh").click()
        page.wait_for_timeout(300)
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-at-risk", "true")
    expect(row).to_have_attribute("data-below-target", "true")
    expect(row.get_by_test_id("power-autonomy")).to_have_text("4.0 h")
    expect(row.get_by_test_id("power-target")).to_have_text("8 h")
    expect(page.locator(f'[data-testid="power-row"][data-node-id="{fine}"]')).to_have_count(0)
    # The whole fleet, not only the sites at risk.
    page.get_by_test_id("at-risk-only").uncheck()
    expect(page.locator(f'[data-testid="power-row"][data-node-id="{fine}"]')).to_be_visible()

    row.get_by_test_id("power-node").click()

    chart = page.get_by_test_id("power-chart").locator("svg")
    expect(chart).to_have_attribute("data-node-id", risky)
    expect(chart).to_have_attribute("data-points", "6")
    expect(chart.locator("polyline.soc")).to_have_count(1)
    expect(chart.locator("line.target")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "power-page.png"), full_page=True)
    assert foreign == []
    expect(page.get_by_test_id("message-error")).to_have_count(0)


def test_the_power_page_without_a_session_sends_the_operator_to_sign_in(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.base_url}/console/power")
    expect(page.get_by_test_id("login-form")).to_be_visible()
