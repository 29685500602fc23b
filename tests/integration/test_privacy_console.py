"""Privacy masks drawn in the console reach a real node over a real broker, which reports them.

Story: a camera node (the real agent, its camera pipeline on a simulated
camera, plain MQTT to the test session's Mosquitto) runs beside a real
``nigehbaan server``. An admin opens the Privacy page in Chromium, opens the
node, draws a polygon over the camera's view by clicking its corners, sees
it filled black in the masked view, gives a reason and saves. The server
sends the new version as a ``set_config`` command; the node applies it (its
frames are masked from then on) and says so in telemetry; the page's count
of nodes applying an older version goes back to zero and the node's applied
version is the new one. A private camera registered through the form is
listed with its agreement.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("cv2")

from playwright.sync_api import Page, expect

from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
from edge_agent.config import CameraAnalyticsConfig, config_from_dict
from edge_agent.node import Node, build_node
from fleet_server.broker import ManagedBroker
from hardware import SimBackend
from hardware.camera import SimCamera
from hardware.clock import SystemClock
from simulators.server_process import ServerProcess
from tests.integration.test_console_layout import CONTRAST, UNNAMED
from tests.support.browser import BROWSER_MARKS
from tests.support.camera import street
from tests.support.console import Account, console_server, sign_in
from tests.support.polling import wait_for

ADMIN = Account("privacy-admin", "admin", "masks-" + secrets.token_hex(8))
NODE = "lhr-prv-cam-0001"

pytestmark = BROWSER_MARKS


class RunningNode:
    """A real agent on its own asyncio loop in a thread (the browser owns the main thread)."""

    def __init__(self, broker: ManagedBroker, data_dir: Path) -> None:
        clock = SystemClock()
        self.camera = SimCamera(camera_id="gate", clock=clock, max_queued=64)
        settings = CameraAnalyticsConfig.model_validate({"max_fps": 0, "queue_size": 16})
        self.pipeline = CameraPipeline([CameraFeed.of(self.camera, settings)], poll_s=0.2)
        self.config = config_from_dict(
            {
                "node_id": NODE, "serial": "SN-PRV-1", "data_dir": str(data_dir),
                "district": "gulberg", "hardware": {"type": "sim"},
                "mqtt": {"url": broker.url}, "telemetry": {"interval_s": 1.0},
                "outbox": {"synchronous": "normal"},
            }
        )  # fmt: skip
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.built = threading.Event()
        self.thread = threading.Thread(target=self._run, name="privacy-node", daemon=True)

    def _run(self) -> None:
        # Built in its own thread: the outbox's SQLite connection belongs to it.
        self.node: Node = build_node(
            self.config, backend=SimBackend(clock=self.clock), components=[self.pipeline],
            renewal=False,
        )  # fmt: skip
        self.built.set()
        self.loop.run_until_complete(self.node.run())

    def start(self) -> None:
        self.thread.start()
        assert self.built.wait(15), "the node did not build"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.node.stop)
        self.thread.join(15)


@pytest.fixture(scope="module")
def stack(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, RunningNode]]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-privacy"), [ADMIN]) as server:
        node = RunningNode(broker, tmp_path_factory.mktemp("privacy-node"))
        node.start()
        try:
            yield server, node
        finally:
            node.stop()


def frame_masked(node: RunningNode) -> Any:
    """Push a bright frame and return the pipeline's privacy figures once it was handled."""
    before = node.pipeline.stats()["cameras"]["gate"]["frames_analysed"]
    image = street()
    image[:] = 200
    node.camera.push_frame(image)
    wait_for(
        lambda: node.pipeline.stats()["cameras"]["gate"]["frames_analysed"] > before,
        timeout=20, what="the frame analysed",
    )  # fmt: skip
    return node.pipeline.stats()["privacy"]


def test_masks_drawn_in_the_console_reach_the_node_and_it_reports_the_version(
    page: Page, stack: tuple[ServerProcess, RunningNode]
) -> None:
    server, node = stack
    # The node and its camera are known to the server (birth and telemetry over the broker).
    headers = {"Authorization": f"Bearer {server.login(ADMIN.username, ADMIN.password)}"}
    wait_for(
        lambda: NODE in httpx.get(f"{server.base_url}/api/v1/cameras", headers=headers).text,
        timeout=30, interval=0.5, what="the node's camera in telemetry",
    )  # fmt: skip
    sign_in(page, server, ADMIN)
    page.get_by_test_id("nav-privacy").click()
    expect(page.get_by_role("heading", name="Privacy masks")).to_be_visible()
    page.get_by_test_id("f-node").fill(NODE)
    page.get_by_test_id("node-load").click()
    expect(page.get_by_test_id("current-version")).to_have_text("none")
    expect(page.get_by_test_id("f-camera")).to_have_value("gate")  # from the node's telemetry

    # Draw a quadrilateral over the left half by clicking its corners.
    canvas = page.get_by_test_id("canvas")
    box = canvas.bounding_box()
    assert box is not None
    for fx, fy in ((0.05, 0.1), (0.45, 0.1), (0.45, 0.9), (0.05, 0.9)):
        canvas.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
    page.get_by_test_id("close-polygon").click()
    expect(page.get_by_test_id("mask-item")).to_have_count(1)
    shape = page.get_by_test_id("mask-shape")
    expect(shape).to_have_count(1)
    # The masked view: the polygon is filled black, as the node will black it out.
    fill = shape.evaluate("el => getComputedStyle(el).fill")
    assert fill in ("rgb(0, 0, 0)", "#000000"), fill
    page.get_by_test_id("masked-view").uncheck()
    assert shape.evaluate("el => getComputedStyle(el).fill") != fill
    page.get_by_test_id("masked-view").check()

    page.get_by_test_id("f-reason").fill("bedroom windows across the road")
    page.get_by_test_id("save-masks").click()
    expect(page.get_by_test_id("message-info").first).to_contain_text("Version 1 saved")
    expect(page.get_by_test_id("current-version")).to_have_text("1")
    expect(page.get_by_test_id("history-row")).to_have_count(1)
    expect(page.get_by_test_id("history-row")).to_contain_text("bedroom windows across the road")

    # The node applied it (set_config over the broker) and masks its frames now.
    wait_for(lambda: node.pipeline.privacy is not None and node.pipeline.privacy.version == 1,
             timeout=30, what="the node applying version 1")  # fmt: skip
    policy = node.node.config.privacy.policy
    assert policy is not None
    [polygon] = policy.cameras["gate"].masks
    assert polygon[0][0] == pytest.approx(0.05, abs=0.01)
    assert polygon[2][1] == pytest.approx(0.9, abs=0.01)
    assert frame_masked(node)["frames_masked"] >= 1

    # Its telemetry says so, and the server's lag list empties.
    def reported() -> bool:
        page.reload()
        page.get_by_test_id("f-node").fill(NODE)
        page.get_by_test_id("node-load").click()
        page.get_by_test_id("current-version").filter(has_text="1").wait_for()
        return page.get_by_test_id("applied-version").inner_text() == "1"

    wait_for(reported, timeout=30, interval=1.0, what="the node reporting version 1")
    expect(page.get_by_test_id("lag-badge")).to_be_hidden()
    expect(page.get_by_test_id("lag-count")).to_have_text("0")


def test_a_private_camera_is_registered_with_its_agreement(
    page: Page, stack: tuple[ServerProcess, RunningNode]
) -> None:
    server, _ = stack
    sign_in(page, server, ADMIN)
    page.goto(f"{server.base_url}/console/privacy")
    page.get_by_test_id("p-node").fill(NODE)
    page.get_by_test_id("p-camera").fill("lobby")
    page.get_by_test_id("p-owner").fill("Shelton Hotel Peshawar")
    page.get_by_test_id("p-agreement").fill("KP-DSA-2026-031")
    page.get_by_test_id("p-expires").fill("2026-12-05T00:00")
    page.get_by_test_id("p-allow-plates").check()
    # Its own stream (issue 15): the URL's password goes to the node and is never shown back.
    page.get_by_test_id("p-source").fill("rtsp://hotel:pw-s3cret@127.0.0.1:9/live")
    page.get_by_test_id("p-min-width").fill("1280")
    page.get_by_test_id("p-min-fps").fill("12.5")
    page.get_by_test_id("p-reason").fill("hotel gate joins under the KP scheme")
    page.get_by_test_id("private-save").click()
    row = page.locator(f'[data-testid="private-row"][data-camera="{NODE}/lobby"]')
    expect(row).to_contain_text("Shelton Hotel Peshawar")
    expect(row).to_contain_text("KP-DSA-2026-031")
    expect(row).to_contain_text("plates")
    expect(row).to_contain_text("rtsp://***@127.0.0.1:9/live")
    expect(row).not_to_contain_text("pw-s3cret")
    expect(row.locator("td").last).to_have_text(re.compile(r"^(unknown|ok|below standard)"))
    # A bad form (no reason) is refused with the server's words and nothing is added.
    page.get_by_test_id("p-node").fill(NODE)
    page.get_by_test_id("p-camera").fill("hall")
    page.get_by_test_id("p-owner").fill("Shelton Hotel Peshawar")
    page.get_by_test_id("p-agreement").fill("KP-DSA-2026-032")
    page.get_by_test_id("p-expires").fill("2026-12-05T00:00")
    page.get_by_test_id("private-save").click()
    expect(page.get_by_test_id("message-error").first).to_contain_text("reason")
    expect(page.get_by_test_id("private-row")).to_have_count(1)


def test_the_privacy_page_is_readable_named_and_fits_a_phone(
    page: Page, stack: tuple[ServerProcess, RunningNode]
) -> None:
    server, _ = stack
    sign_in(page, server, ADMIN)
    page.goto(f"{server.base_url}/console/privacy?node={NODE}")
    expect(page.get_by_test_id("editor")).to_be_visible()
    expect(page.get_by_test_id("console-nav").locator('[aria-current="page"]')).to_have_text(
        "Privacy"
    )
    assert page.evaluate(UNNAMED) == []
    assert page.evaluate(CONTRAST) == []
    page.set_viewport_size({"width": 360, "height": 800})
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert int(overflow) <= 0, "the privacy page is wider than a phone"


def test_the_cameras_latest_snapshot_shows_behind_the_masks_for_a_stated_purpose(
    page: Page, stack: tuple[ServerProcess, RunningNode]
) -> None:
    import hashlib

    import cv2
    from sqlmodel import Session, col, select

    from fleet_server.db import make_engine
    from fleet_server.evidence.store import LocalEvidenceStore
    from fleet_server.models import DataAccess, utcnow
    from fleet_server.models.evidence import EvidenceItem

    server, _ = stack
    ok, encoded = cv2.imencode(".jpg", street())
    assert ok
    jpeg = encoded.tobytes()
    sha = hashlib.sha256(jpeg).hexdigest()
    store = LocalEvidenceStore(server.data_dir.resolve() / "evidence")
    store.append(sha, 0, jpeg, size=len(jpeg))
    store.finish(sha, size=len(jpeg))
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            session.add(
                EvidenceItem(
                    sha256=sha, data_class="panic_snapshot", node_id=NODE, district="gulberg",
                    camera_id="gate", captured_at=utcnow(), size=len(jpeg),
                    content_type="image/jpeg", claim={}, signature="-", cert_serial="-",
                    cert_pem="-", state="stored", received_bytes=len(jpeg), stored_at=utcnow(),
                )
            )  # fmt: skip
            session.commit()
        sign_in(page, server, ADMIN)
        page.goto(f"{server.base_url}/console/privacy?node={NODE}")
        expect(page.get_by_test_id("snapshot-offer")).to_be_visible()
        snapshot = page.get_by_test_id("snapshot")
        expect(snapshot).to_have_attribute("visibility", "hidden")
        page.get_by_test_id("snapshot-show").click()  # no purpose: refused on the page
        expect(page.get_by_test_id("message-error").first).to_contain_text("State why")
        page.get_by_test_id("snap-ref").fill("drawing the masks of the gate camera")
        page.get_by_test_id("snapshot-show").click()
        expect(snapshot).to_have_attribute("visibility", "visible")
        assert str(snapshot.get_attribute("href")).startswith("data:image/jpeg;base64,")
        with Session(engine) as session:
            views = session.exec(
                select(DataAccess).where(col(DataAccess.object_id) == sha)
            ).all()  # fmt: skip
        assert [(v.resource, v.purpose_kind) for v in views] == [("evidence", "note")]
    finally:
        engine.dispose()
