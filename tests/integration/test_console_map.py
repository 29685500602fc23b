"""The fleet map in a real Chromium against a real server and broker.

The story: a city's fleet (seeded straight into the server's database, with
positions around Lahore's towns) is on the map, every node coloured by its
state, clustered, with each district's outline; nothing is fetched from
outside the server (no tiles, no CDN). A pillar's press turns its node red
live from the feed, and a click on the node opens its page. An operator and
a fleet admin both use it; at phone width the page does not scroll sideways.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from simulators.console_fleet import TOWNS, SeededFleet, seed_fleet
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, FakePillar, console_server, sign_in

OPERATOR = Account("op-map", "operator", "lantern-" + secrets.token_hex(8))
ADMIN = Account("admin-map", "admin", "compass-" + secrets.token_hex(8))
NODES = 300
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("map"), [OPERATOR, ADMIN]) as proc:
        yield proc


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> SeededFleet:
    engine = make_engine(server.db_url)
    try:
        return seed_fleet(engine, nodes=NODES, seed=3, prefix="map")
    finally:
        engine.dispose()


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


def _open_map(page: Page, server: ServerProcess, account: Account) -> list[str]:
    """Sign in, follow the nav's Map link; the URLs the map page asked for."""
    sign_in(page, server, account)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_test_id("nav-map").click()
    expect(page.get_by_test_id("fleet-map")).to_have_attribute("data-state", "ready")
    return requested


def test_an_operator_sees_every_node_by_state_with_district_outlines_and_nothing_from_outside(
    page: Page, server: ServerProcess, fleet: SeededFleet, tmp_path: Path
) -> None:
    requested = _open_map(page, server, OPERATOR)

    the_map = page.get_by_test_id("fleet-map")
    expect(the_map).to_have_attribute("data-nodes", str(NODES))
    expect(the_map).to_have_attribute("data-tiles", "off")
    expect(page.get_by_test_id("map-total")).to_have_text(str(NODES))
    expect(page.get_by_test_id("count-offline")).to_have_text(str(len(fleet.offline)))
    expect(page.get_by_test_id("count-alert")).to_have_text(str(len(fleet.alerting)))
    expect(page.get_by_test_id("count-power_risk")).to_have_text(str(len(fleet.power_risk)))
    expect(page.get_by_test_id("count-lagging")).to_have_text(str(len(fleet.lagging)))
    # Zoomed out to the whole city, the nodes are in clusters, coloured by their worst state.
    expect(page.locator(".nb-cluster").first).to_be_visible()
    worst = ".nb-cluster-alert, .nb-cluster-offline, .nb-cluster-power_risk, .nb-cluster-lagging"
    assert page.locator(worst).count() >= 1
    state_of = "id => window.nbMapDebug.stateOf(id)"
    assert page.evaluate(state_of, fleet.alerting[0]) == "alert"
    assert page.evaluate(state_of, fleet.offline[0]) == "offline"
    assert page.evaluate(state_of, fleet.power_risk[0]) == "power_risk"
    # One outline (and its label) per town.
    expect(page.locator(".district-label")).to_have_count(len(TOWNS))
    assert all(url.startswith(server.base_url) for url in requested), [
        url for url in requested if not url.startswith(server.base_url)
    ]
    assert page.evaluate("() => window.nbMapMetrics.ready_ms") > 0
    expect(the_map).to_have_attribute("data-shown", str(NODES))

    # The legend filters: only the nodes with an alert stay on the map.
    for state in ("offline", "power_risk", "lagging", "online"):
        page.get_by_test_id(f"legend-toggle-{state}").uncheck()
    expect(the_map).to_have_attribute("data-shown", str(len(fleet.alerting)))
    _shot(page, tmp_path, "map-operator-alerts-only-1280")
    page.get_by_test_id("legend-toggle-online").check()
    expect(the_map).to_have_attribute(
        "data-shown", str(len(fleet.alerting) + NODES - len(fleet.offline) - len(fleet.power_risk)
                          - len(fleet.lagging) - len(fleet.alerting))
    )  # fmt: skip
    _shot(page, tmp_path, "map-operator-1280")


def test_a_press_turns_its_node_red_live_and_a_click_on_it_opens_its_page(
    page: Page, server: ServerProcess, broker: ManagedBroker, fleet: SeededFleet
) -> None:
    quiet = next(
        n for n in fleet.node_ids
        if n not in {*fleet.offline, *fleet.alerting, *fleet.power_risk, *fleet.lagging}
    )  # fmt: skip
    _open_map(page, server, OPERATOR)
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")
    assert page.evaluate("id => window.nbMapDebug.stateOf(id)", quiet) == "online"
    alerting_before = int(page.get_by_test_id("count-alert").inner_text())

    pillar = FakePillar(broker, quiet)
    pillar.start()
    try:
        pillar.press()
        # From the SSE feed, not a reload: the marker turns red at once.
        expect(page.get_by_test_id("fleet-map")).to_have_attribute("data-last-alert-node", quiet)
        assert page.evaluate("id => window.nbMapDebug.stateOf(id)", quiet) == "alert"
        # The next state read agrees, and the legend counts it.
        expect(page.get_by_test_id("count-alert")).to_have_text(str(alerting_before + 1))
    finally:
        pillar.stop()

    page.get_by_test_id("map-find-input").fill(quiet)
    page.get_by_test_id("map-find-submit").click()
    expect(page.get_by_test_id("map-find-open")).to_be_visible()
    page.wait_for_function("id => window.nbMapDebug.pointOf(id).visible", arg=quiet)
    point = page.evaluate("id => window.nbMapDebug.pointOf(id)", quiet)
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(f"**/console/nodes/{quiet}")
    expect(page.get_by_test_id("node-title")).to_have_text(quiet)


def test_an_admin_uses_the_map_at_phone_and_desktop_width(
    page: Page, server: ServerProcess, fleet: SeededFleet, tmp_path: Path
) -> None:
    _open_map(page, server, ADMIN)
    expect(page.get_by_test_id("map-total")).to_have_text(str(NODES))
    _shot(page, tmp_path, "map-admin-1280")

    page.set_viewport_size({"width": 360, "height": 780})
    page.reload()
    expect(page.get_by_test_id("fleet-map")).to_have_attribute("data-state", "ready")
    expect(page.get_by_test_id("fleet-map")).to_be_in_viewport()
    assert _overflow(page) <= 0
    _shot(page, tmp_path, "map-admin-360")
