"""The technician's phone page in a real Chromium, against a real server, broker and edge agent.

Stories: a technician on a phone-sized screen finds a freshly installed node
by its serial, runs the commissioning checklist (`tech commission`'s steps:
test mode on, a test press that must not escalate, health, test mode off)
and presses the pillar's button when the page asks; the press shows up live,
the power readings are there, and the node ends up commissioned. Opening the
page from the node's QR label (its URL with ?node=) goes straight to the
node. An operator sees no Technician link and cannot commission from the
page; the server refuses the lifecycle change either way.

The node is the real `edge_agent` on simulated hardware, running in a thread
of its own against the session's Mosquitto, as in tests/integration's agent
stories; the press is a press of its mock pin.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from sqlmodel import Session

from edge_agent.agent import Agent
from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import Node
from hardware import SimButton
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS
from tests.support.console import Account, console_server, sign_in
from tests.support.fleet_standin import make_agent, node_config, press_once

OPERATOR = Account("op-tech", "operator", "pillar-" + secrets.token_hex(8))
ADMIN = Account("admin-tech", "admin", "keys-" + secrets.token_hex(8))
TECHNICIAN = Account("tech-pole", "technician", "ladder-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")
PHONE: ViewportSize = {"width": 360, "height": 780}

pytestmark = BROWSER_MARKS


class AgentThread:
    """A real edge agent, made and run on its own event loop in a background thread.

    Made in the thread too: its outbox is a SQLite connection, usable only
    by the thread that opened it.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._made = threading.Event()
        self._agent: Agent | None = None
        self._button: SimButton | None = None
        self._thread = threading.Thread(target=self._run, name=config["node_id"], daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._agent, self._button = make_agent(self.config)
        self._made.set()
        self.loop.run_until_complete(self._agent.run())

    @property
    def agent(self) -> Agent:
        assert self._agent is not None
        return self._agent

    def start(self) -> None:
        self._thread.start()
        assert self._made.wait(15), "the agent was never made"

    def press(self) -> None:
        """The technician presses the pillar's button (the mock pin), on the agent's loop."""
        assert self._button is not None
        asyncio.run_coroutine_threadsafe(press_once(self._button), self.loop).result(10)

    def stop(self) -> None:
        if self._agent is not None:
            self.loop.call_soon_threadsafe(self._agent.stop)
        self._thread.join(15)
        self.loop.close()


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    accounts = [OPERATOR, ADMIN, TECHNICIAN]
    with console_server(broker, tmp_path_factory.mktemp("fleet-tech"), accounts) as proc:
        yield proc


def _admin_headers(server: ServerProcess) -> dict[str, str]:
    response = httpx.post(
        f"{server.base_url}/api/v1/login/access-token",
        data={"username": ADMIN.username, "password": ADMIN.password},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def node(broker: ManagedBroker, server: ServerProcess, tmp_path: Path) -> Iterator[AgentThread]:
    """A freshly installed pillar: online at the server, provisioned, reporting its power."""
    config = node_config(broker, tmp_path)
    config["telemetry"] = {"interval_s": 1.0}
    config["power"] = {"enabled": True, "interval_s": 0.5}
    running = AgentThread(config)
    running.start()
    agent = running.agent
    headers = _admin_headers(server)
    try:
        with httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers) as api:
            for _ in range(150):
                found = api.get(f"/nodes/{agent.node_id}")
                if found.status_code == 200 and found.json()["online"]:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"{agent.node_id} never came online at the server")
        provisioned(server, agent.node_id)
        yield running
    finally:
        running.stop()


def provisioned(server: ServerProcess, node_id: str) -> None:
    """What enrolling would have done (tested with real certificates elsewhere): provisioned."""
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            row = session.get(Node, node_id)
            assert row is not None
            row.lifecycle = "provisioned"
            session.add(row)
            session.commit()
    finally:
        engine.dispose()


def in_test_mode(node: AgentThread) -> bool:
    return bool(node.agent.test_mode)


def config_serial(node: AgentThread) -> str:
    return str(node.agent.config.serial)


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def _overflow(page: Page) -> int:
    return int(
        page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_a_technician_commissions_a_node_from_a_phone_with_a_live_test_press(
    phone: Page, server: ServerProcess, node: AgentThread, tmp_path: Path
) -> None:
    sign_in(phone, server, TECHNICIAN)
    phone.get_by_test_id("nav-technician").click()
    expect(phone.get_by_role("heading", name="Find the node")).to_be_visible()
    expect(phone.get_by_test_id("nav-users")).to_be_hidden()

    serial = str(config_serial(node)).lower()  # read off a sticker, in any case
    phone.get_by_label("Node id, serial, or the text of its QR label").fill(serial)
    phone.get_by_test_id("find-submit").click()
    expect(phone.get_by_test_id("node-id")).to_have_text(node.agent.node_id)
    expect(phone.get_by_test_id("node-online")).to_have_text("online")
    expect(phone.get_by_test_id("node-lifecycle")).to_have_text("provisioned")
    expect(phone.get_by_test_id("power-soc")).to_contain_text("%")
    expect(phone.get_by_test_id("power-at")).to_contain_text("PKT")
    assert _overflow(phone) <= 0, "the technician page is wider than a phone"

    phone.get_by_test_id("commission-start").click()
    expect(phone.get_by_test_id("press-prompt")).to_be_visible(timeout=40_000)
    assert in_test_mode(node)
    _shot(phone, tmp_path, "technician-press-now")
    node.press()

    result = phone.get_by_test_id("checklist-result")
    expect(result).to_have_text("PASS — the node is commissioned.", timeout=60_000)
    statuses = phone.get_by_test_id("check").evaluate_all(
        "items => items.map(i => [i.dataset.name, i.dataset.status])"
    )
    assert statuses == [
        ["node online", "pass"],
        ["test mode on", "pass"],
        ["button press", "pass"],
        ["test press did not escalate", "pass"],
        ["health", "pass"],
        ["camera snapshot", "skipped"],
        ["test mode off", "pass"],
        ["lifecycle → commissioned", "pass"],
    ]
    expect(phone.get_by_test_id("node-lifecycle")).to_have_text("commissioned")
    expect(phone.get_by_test_id("press").first).to_have_attribute("data-test", "true")
    assert not in_test_mode(node)
    assert _overflow(phone) <= 0
    _shot(phone, tmp_path, "technician-phone")

    phone.set_viewport_size({"width": 1280, "height": 900})
    assert _overflow(phone) <= 0
    _shot(phone, tmp_path, "technician-desktop")


def test_the_qr_label_opens_the_page_on_its_node(
    phone: Page, server: ServerProcess, node: AgentThread
) -> None:
    sign_in(phone, server, TECHNICIAN)
    phone.goto(f"{server.base_url}/console/technician?node={node.agent.node_id}")
    expect(phone.get_by_test_id("node-id")).to_have_text(node.agent.node_id)
    expect(phone.get_by_test_id("commission-start")).to_be_enabled()


def test_an_operator_has_no_technician_link_and_cannot_commission(
    page: Page, server: ServerProcess, node: AgentThread
) -> None:
    sign_in(page, server, OPERATOR)
    expect(page.get_by_test_id("whoami")).to_have_text(f"{OPERATOR.username} · operator")
    expect(page.get_by_test_id("nav-technician")).to_be_hidden()
    page.goto(f"{server.base_url}/console/technician?node={node.agent.node_id}")
    expect(page.get_by_test_id("node-id")).to_have_text(node.agent.node_id)
    expect(page.get_by_test_id("checklist-role")).to_be_visible()
    expect(page.get_by_test_id("commission-start")).to_be_disabled()

    token = page.evaluate("() => sessionStorage.getItem('nigehbaan.token')")
    refused = httpx.post(
        f"{server.base_url}/api/v1/nodes/{node.agent.node_id}/lifecycle",
        json={"to": "commissioned", "note": "operator"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403
