"""A node's page in a real Chromium against a real server and broker.

The story: a pillar is born and connected; its page shows who it is (serial,
site, district, lifecycle, firmware), its certificate state, its presence and
outages, its power and the server-drawn 48-hour chart, its recent alerts and
events; the operator pings it from the page, the node's reply (with its
components' health, as `edge_agent/system.py` answers) appears, and the
health table fills from it. A fleet admin sees the same page; at phone width
it does not scroll sideways.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from proto.codec import decode, encode
from proto.errors import ProtoError
from proto.messages import PingCommand, PowerTelemetry, Reply, Telemetry
from proto.topics import reply_topic, telemetry_topic
from simulators.console_fleet import SeededFleet, seed_fleet
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, FakePillar, console_server, sign_in

OPERATOR = Account("op-node", "operator", "beacon-" + secrets.token_hex(8))
ADMIN = Account("admin-node", "admin", "anchor-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")
HEALTH = {
    "ok": False,
    "components": {
        "system": {"ok": True, "detail": "answering commands"},
        "panic_button": {"ok": True, "detail": "gpio 17 idle"},
        "camera": {"ok": False, "detail": "camera_lost: no frames for 30 s"},
    },
}

pytestmark = BROWSER_MARKS


class AnsweringPillar(FakePillar):
    """A FakePillar that answers `ping` with a health report, like edge_agent/system.py."""

    def __init__(self, broker: ManagedBroker, node_id: str) -> None:
        super().__init__(broker, node_id)
        self.pings: queue.Queue[str] = queue.Queue()
        self._client.on_message = self._answer

    def _answer(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            message = decode(msg.topic, bytes(msg.payload))
        except ProtoError:
            return
        if isinstance(message, PingCommand):
            self.pings.put(message.request_id)
            reply = Reply(
                node_id=self.node_id,
                ts=datetime.now(timezone.utc),
                request_id=message.request_id,
                ok=True,
                result={"uptime_s": 12.5, "outbox_depth": 0, "health": HEALTH},
            )
            # Not from the network thread: publishing waits for the broker's ack.
            threading.Thread(
                target=self._publish, args=(reply_topic(self.node_id, message.request_id),
                                            encode(reply)), daemon=True,
            ).start()  # fmt: skip
        else:
            FakePillar._on_message(self, client, userdata, msg)

    def report_power(self, hours: int) -> None:
        """An hour of power telemetry each for the last `hours` hours, as a pillar reports it."""
        now = datetime.now(timezone.utc)
        for back in range(hours, -1, -1):
            power = PowerTelemetry(
                panel_w=0.0, battery_v=12.6, battery_soc=0.9 - back / 100, load_w=4.0,
                autonomy_h=30.0 - back / 4, mains_present=False, policy_step=0,
            )  # fmt: skip
            report = Telemetry(
                node_id=self.node_id, ts=now - timedelta(hours=back), uptime_s=1.0, power=power
            )
            self._publish(telemetry_topic(self.node_id), encode(report))


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("node"), [OPERATOR, ADMIN]) as proc:
        yield proc


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> SeededFleet:
    engine = make_engine(server.db_url)
    try:
        return seed_fleet(engine, nodes=40, seed=5, prefix="nd")
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def pillar(broker: ManagedBroker, fleet: SeededFleet) -> Iterator[AnsweringPillar]:
    node = AnsweringPillar(broker, fleet.offline[0])
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def _open(page: Page, server: ServerProcess, account: Account, node_id: str) -> None:
    sign_in(page, server, account)
    page.goto(f"{server.base_url}/console/nodes/{node_id}")
    expect(page.get_by_test_id("node-page")).to_have_attribute("data-state", "ready")


def test_an_operator_reads_a_node_and_pings_it_for_its_components_health(
    page: Page, server: ServerProcess, pillar: AnsweringPillar, tmp_path: Path
) -> None:
    node_id = pillar.node_id
    pillar.report_power(hours=6)
    pillar.press()
    _open(page, server, OPERATOR, node_id)

    expect(page.get_by_test_id("node-title")).to_have_text(node_id)
    # The birth of the FakePillar names its serial, site and district.
    expect(page.get_by_test_id("node-serial")).to_have_text(f"NB-TEST-{node_id}")
    expect(page.get_by_test_id("node-district")).to_have_text("lahore-gulberg")
    expect(page.get_by_test_id("node-lifecycle")).to_contain_text("active")
    expect(page.get_by_test_id("node-firmware")).to_have_text("0.1.0")
    expect(page.get_by_test_id("node-online")).to_have_text("online")
    # It was offline before this birth: the outage is in its history.
    expect(page.get_by_test_id("node-outages")).to_contain_text("Offline")
    # The latest reading, and the Power page's chart (server SVG) with the six hours in it.
    expect(page.get_by_test_id("node-power")).to_contain_text("90 %")
    chart = page.get_by_test_id("node-power-chart").locator("svg")
    expect(chart).to_be_visible()
    assert int(chart.get_attribute("data-points") or 0) >= 6
    expect(page.get_by_test_id("not-recorded")).to_contain_text("per camera over time")
    expect(page.get_by_test_id("cameras-note")).to_have_text("This node reports no camera.")
    expect(page.get_by_test_id("node-alert-row").first).to_contain_text("panic")
    expect(page.get_by_test_id("health-note")).to_contain_text("No ping answered yet")

    page.get_by_test_id("command-name").select_option("ping")
    page.get_by_test_id("command-send").click()
    expect(page.get_by_test_id("command-status")).to_have_attribute("data-state", "ok")
    assert not pillar.pings.empty()
    expect(page.get_by_test_id("health-row")).to_have_count(3)
    camera = page.get_by_test_id("health-row").filter(has_text="camera")
    expect(camera).to_contain_text("not ok")
    expect(camera).to_contain_text("camera_lost")
    expect(page.get_by_test_id("command-row").first).to_contain_text("ok")
    _shot(page, tmp_path, "node-operator-1280")


def test_an_admin_reads_the_same_page_at_phone_width(
    page: Page, server: ServerProcess, pillar: AnsweringPillar, tmp_path: Path
) -> None:
    _open(page, server, ADMIN, pillar.node_id)
    expect(page.get_by_test_id("enrollment-row").first).to_contain_text("known")
    expect(page.get_by_test_id("cert-serial")).to_have_text("none issued")

    page.set_viewport_size({"width": 360, "height": 780})
    page.reload()
    expect(page.get_by_test_id("node-page")).to_have_attribute("data-state", "ready")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    _shot(page, tmp_path, "node-admin-360")


def test_an_unknown_node_says_so(page: Page, server: ServerProcess) -> None:
    sign_in(page, server, OPERATOR)
    page.goto(f"{server.base_url}/console/nodes/no-such-node")
    expect(page.get_by_test_id("node-page")).to_have_attribute("data-state", "error")
    expect(page.get_by_test_id("message-error")).to_contain_text("node not found")
