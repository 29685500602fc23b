"""`/docs` in Chromium on a machine with no internet: Swagger UI comes from the server itself.

Issue 11 found a blank page in a control room without internet, because the
page's scripts came from a CDN. Here every request that does not go to the
server on 127.0.0.1 is refused, as that network would, and the page must
still render the API's operations.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, Route, expect

from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("openapi-docs"), broker_url=None, extra_args=("--no-mqtt",)
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _offline(page: Page, server: ServerProcess) -> list[str]:
    """Refuse every request that is not to the server; return the list of refused URLs."""
    refused: list[str] = []

    def route(r: Route) -> None:
        if r.request.url.startswith(server.base_url + "/"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    return refused


def test_swagger_ui_renders_the_operations_with_no_internet(
    page: Page, server: ServerProcess
) -> None:
    refused = _offline(page, server)
    page.goto(f"{server.base_url}/docs")
    expect(page.locator(".opblock-summary-path[data-path='/api/v1/nodes']").first).to_be_visible()
    expect(
        page.locator(".opblock-summary-path[data-path='/api/v1/login/access-token']")
    ).to_be_visible()
    assert page.locator(".opblock").count() > 30
    assert refused == []
