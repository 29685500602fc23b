"""The fleet map with a deployment's own tile server, in a real Chromium.

The story: a deployment that runs its own tile server names it in
`NIGEHBAAN_CONSOLE_MAP_TILE_URL`; the map draws its tiles under the nodes,
the page's policy lets images come from that one origin (the browser loads
them), and nothing else is fetched from outside the fleet server.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from simulators.console_fleet import seed_fleet
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, sign_in

OPERATOR = Account("op-tiles", "operator", "atlas-" + secrets.token_hex(8))
# A 1×1 grey PNG: any tile will do.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)

pytestmark = BROWSER_MARKS


class _Tiles(BaseHTTPRequestHandler):
    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture(scope="module")
def tile_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Tiles)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory, tile_server: str
) -> Iterator[ServerProcess]:
    env = {
        "TILES_OP_PW": OPERATOR.password,
        "NIGEHBAAN_CONSOLE_MAP_TILE_URL": f"{tile_server}/{{z}}/{{x}}/{{y}}.png",
    }
    proc = ServerProcess(data_dir=tmp_path_factory.mktemp("tiles"), broker_url=broker.url, env=env)
    made = proc.run_cli(
        "--create-user", OPERATOR.username, "--role", OPERATOR.role,
        "--password-env", "TILES_OP_PW",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    engine = make_engine(proc.db_url)
    try:
        seed_fleet(engine, nodes=60, seed=9, prefix="tiles")
    finally:
        engine.dispose()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_the_map_draws_the_deployments_own_tiles_and_fetches_nothing_else_outside(
    page: Page, server: ServerProcess, tile_server: str
) -> None:
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    sign_in(page, server, OPERATOR)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.get_by_test_id("nav-map").click()
    the_map = page.get_by_test_id("fleet-map")
    expect(the_map).to_have_attribute("data-state", "ready")
    expect(the_map).to_have_attribute("data-tiles", "on")
    expect(page.locator("img.leaflet-tile-loaded").first).to_be_attached()

    assert _Tiles.served, "the browser asked the tile server for nothing"
    assert all(path.endswith(".png") for path in _Tiles.served)
    outside = [
        url for url in requested
        if not url.startswith(server.base_url) and not url.startswith(tile_server)
    ]  # fmt: skip
    assert not outside
    assert not refused
