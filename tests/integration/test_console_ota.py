"""The console's OTA pages in a real Chromium against a real server and broker.

The story: a fleet admin uploads an agent build on the artifacts page,
starts a campaign for a district on the campaigns page and watches it: the
canary node reports over MQTT that the new version rolled back, and the page
shows the campaign aborted with the reason and the node's own words, while
the other node was never offered anything. A second campaign is paused and
aborted from its buttons. Nothing the pages load comes from anywhere but the
server (no CDN).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect
from sqlmodel import Session

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import Node, utcnow
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import OtaEvent
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

pytestmark = BROWSER_MARKS

ADMIN = Account("ota-admin", "admin", "waves-" + secrets.token_hex(8))


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("ota-console"), [ADMIN]) as proc:
        yield proc


def add_nodes(server: ServerProcess, district: str, n: int) -> list[str]:
    ids = [f"{district}-{i:03d}" for i in range(n)]
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            for node_id in ids:
                session.add(Node(node_id=node_id, hardware="sim", district=district,
                                 lifecycle="active"))  # fmt: skip
            session.commit()
    finally:
        engine.dispose()
    return ids


def report(broker: ManagedBroker, node_id: str, campaign_id: str, phase: str, detail: str) -> None:
    """The node's `ota` event, published as its outbox does (QoS 1)."""
    event = OtaEvent(node_id=node_id, ts=utcnow(), event_id=new_event_id(), seq=1,
                     artifact="agent", version="2.0.0", phase=phase,
                     campaign_id=campaign_id, detail=detail)  # fmt: skip
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic_for(event), encode(event), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def upload(page: Page, server: ServerProcess, tmp_path: Path, *, name: str, version: str,
           kind: str = "app") -> None:  # fmt: skip
    page.goto(f"{server.base_url}/console/ota/artifacts")
    build = tmp_path / f"{name}-{version}.tar"
    build.write_bytes(secrets.token_bytes(4096))
    page.get_by_test_id("upload-kind").select_option(kind)
    page.get_by_test_id("upload-name").fill(name)
    page.get_by_test_id("upload-version").fill(version)
    page.get_by_test_id("upload-hardware").fill("sim")
    page.get_by_test_id("upload-file").set_input_files(str(build))
    page.get_by_test_id("upload-submit").click()
    row = page.locator('[data-testid="artifact-row"]').filter(has_text=version)
    expect(row.get_by_test_id("artifact-name")).to_have_text(name)
    expect(row.get_by_test_id("artifact-kind")).to_have_text(kind)
    expect(row.get_by_test_id("artifact-size")).to_have_text("4.0 KiB")


def start_campaign(page: Page, server: ServerProcess, *, name: str, district: str,
                   artifact: str, waves: str, downgrade: bool = False) -> str:  # fmt: skip
    page.goto(f"{server.base_url}/console/ota/campaigns")
    page.get_by_test_id("campaign-name").fill(name)
    page.get_by_test_id("campaign-artifact").select_option(label=artifact)
    page.get_by_test_id("campaign-districts").fill(district)
    page.get_by_test_id("campaign-waves").fill(waves)
    page.get_by_test_id("campaign-min-sample").fill("1")
    page.get_by_test_id("campaign-threshold").fill("0")
    page.get_by_test_id("campaign-downgrade").set_checked(downgrade)
    page.get_by_test_id("campaign-submit").click()
    detail = page.get_by_test_id("campaign-detail")
    expect(detail).to_be_visible()
    expect(page.get_by_test_id("detail-state")).to_have_text("running")
    campaign_id = detail.get_attribute("data-campaign-id")
    assert campaign_id
    return campaign_id


def test_an_admin_uploads_a_build_starts_a_campaign_and_watches_a_failed_canary_abort_it(
    page: Page, server: ServerProcess, broker: ManagedBroker, tmp_path: Path
) -> None:
    foreign: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(server.base_url) else foreign.append(r.url)
    )
    canary, other = add_nodes(server, "ota-canary-d", 2)
    sign_in(page, server, ADMIN)
    upload(page, server, tmp_path, name="agent", version="2.0.0")

    campaign_id = start_campaign(page, server, name="agent 2.0.0 canary", district="ota-canary-d",
                                 artifact="app agent 2.0.0 (sim)", waves="50, 100")  # fmt: skip
    node_row = page.locator(f'[data-testid="node-row"][data-node-id="{canary}"]')
    expect(node_row).to_be_visible()
    # The server's wave job puts the canary (the first node by id) in wave 1.
    expect(node_row.locator("td").nth(1)).to_have_text("1")

    report(broker, canary, campaign_id, "rolled_back", "button loop not alive within 120 s")

    expect(page.get_by_test_id("detail-state")).to_have_text("aborted")
    expect(page.get_by_test_id("detail-reason")).to_contain_text("1 of 1 finished nodes")
    expect(node_row.get_by_test_id("node-state")).to_have_text("rolled back")
    expect(node_row.get_by_test_id("node-detail")).to_have_text(
        "button loop not alive within 120 s"
    )
    other_row = page.locator(f'[data-testid="node-row"][data-node-id="{other}"]')
    expect(other_row.locator("td").nth(1)).to_have_text("next")  # no other wave started
    expect(page.get_by_test_id("action-retry")).to_be_visible()
    expect(page.get_by_test_id("action-pause")).to_be_hidden()
    expect(page.get_by_test_id("detail-downgrade")).to_be_hidden()
    assert foreign == []


def test_an_admin_pauses_and_aborts_a_campaign_from_its_page(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    add_nodes(server, "ota-pause-d", 3)
    sign_in(page, server, ADMIN)
    page.get_by_test_id("nav-ota").click()  # the shared top bar leads to the campaigns
    expect(page.get_by_test_id("campaign-form")).to_be_visible()
    upload(page, server, tmp_path, name="agent", version="2.1.0")
    # An OS image is one more kind the form uploads (RAUC bundles, docs/ota.md).
    upload(page, server, tmp_path, name="rootfs", version="9.0.0", kind="os")
    start_campaign(page, server, name="agent 2.1.0", district="ota-pause-d",
                   artifact="app agent 2.1.0 (sim)", waves="100", downgrade=True)  # fmt: skip
    expect(page.get_by_test_id("detail-downgrade")).to_be_visible()

    page.get_by_test_id("action-pause").click()
    expect(page.get_by_test_id("detail-state")).to_have_text("paused")
    expect(page.get_by_test_id("action-resume")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("action-abort").click()
    expect(page.get_by_test_id("detail-state")).to_have_text("aborted")
    expect(page.get_by_test_id("detail-reason")).to_have_text(f"aborted by {ADMIN.username}")
    expect(page.get_by_test_id("action-abort")).to_be_hidden()
