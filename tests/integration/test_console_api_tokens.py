"""The API tokens page in a real Chromium against a real server and broker.

Story: a fleet admin follows the header's "API tokens" link and issues a
token for another agency's system, scoped to one district and expiring in
30 days. The secret is shown once, in its own panel; the system uses it (and
the list then says when it was last used) and sees only its district; once
the admin says it is copied, the secret is gone from the page and a reload
does not bring it back. The admin revokes it and the next request with it is
refused. On a 360 px phone the list still fits. An operator has no "API
tokens" link, and opening the page by its address shows the server's refusal
and no token at all.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

ADMIN = Account("admin-tokens", "admin", "keys-" + secrets.token_hex(8))
OPERATOR = Account("op-tokens", "operator", "desk-" + secrets.token_hex(8))
SYSTEM = "FIA case system"
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-tokens"), [ADMIN, OPERATOR]) as p:
        yield p


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


def _row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="token-row"][data-name="{name}"]')


def test_an_admin_issues_a_scoped_expiring_token_sees_it_once_and_revokes_it(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    sign_in(page, server, ADMIN)
    page.get_by_test_id("nav-api-tokens").click()
    expect(page.get_by_role("heading", name="Issue a token")).to_be_visible()
    expect(page.get_by_test_id("nav-api-tokens")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("tokens-empty")).to_be_visible()

    page.get_by_label("System").fill(SYSTEM)
    page.get_by_label("Agency").fill("FIA")
    page.get_by_label("Role").select_option("operator")
    page.get_by_test_id("token-districts").fill("lahore-gulberg")
    page.get_by_test_id("token-days").fill("30")
    page.get_by_test_id("token-issue").click()

    panel = page.get_by_test_id("token-secret")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("token-secret-for")).to_have_text(f"{SYSTEM} (FIA)")
    value = page.get_by_test_id("token-secret-value")
    expect(value).to_have_value(re.compile(r"^ngb_\S{20,}$"))
    token = value.input_value()
    assert token.startswith("ngb_"), token
    row = _row(page, SYSTEM)
    expect(row.get_by_test_id("token-row-agency")).to_have_text("FIA · operator")
    expect(row.get_by_test_id("token-row-districts")).to_have_text("lahore-gulberg")
    expect(row.get_by_test_id("token-row-last-used")).to_have_text("never")
    expect(row.get_by_test_id("token-row-status")).to_have_text("active")
    expires = row.get_by_test_id("token-row-expires").inner_text()
    assert expires not in ("", "—", "never")
    assert token not in row.inner_text()
    _shot(page, tmp_path, "api-tokens-issued")

    # The system uses it: it sees its district's scope, and the list says it was used.
    system = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{server.base_url}/api/v1/users/me", headers=system)
    assert me.status_code == 200, me.text
    assert me.json()["districts"] == ["lahore-gulberg"]
    assert httpx.get(f"{server.base_url}/api/v1/nodes", headers=system).status_code == 200

    page.get_by_test_id("token-secret-done").click()
    expect(panel).to_be_hidden()
    expect(value).to_have_value("")
    assert token not in page.content()
    page.reload()
    expect(_row(page, SYSTEM).get_by_test_id("token-row-last-used")).not_to_have_text("never")
    expect(page.get_by_test_id("token-secret")).to_be_hidden()
    assert token not in page.content()

    _row(page, SYSTEM).get_by_test_id("token-revoke").click()
    dialog = page.get_by_test_id("revoke-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("revoke-title")).to_contain_text(SYSTEM)
    page.get_by_test_id("revoke-confirm").click()
    expect(dialog).to_be_hidden()
    expect(_row(page, SYSTEM).get_by_test_id("token-row-status")).to_contain_text("revoked")
    expect(_row(page, SYSTEM).get_by_test_id("token-revoke")).to_have_count(0)
    assert httpx.get(f"{server.base_url}/api/v1/nodes", headers=system).status_code == 401
    _shot(page, tmp_path, "api-tokens-desktop")

    page.set_viewport_size({"width": 360, "height": 800})
    expect(_row(page, SYSTEM)).to_be_visible()
    expect(page.get_by_test_id("token-issue")).to_be_visible()
    assert _overflow(page) <= 0, "the API tokens page is wider than a phone"
    _shot(page, tmp_path, "api-tokens-phone")


def test_an_operator_has_no_link_and_the_page_shows_only_the_server_s_refusal(
    page: Page, server: ServerProcess
) -> None:
    sign_in(page, server, OPERATOR)
    expect(page.get_by_test_id("whoami")).to_have_text(f"{OPERATOR.username} · operator")
    expect(page.get_by_test_id("nav-api-tokens")).to_be_hidden()
    page.goto(f"{server.base_url}/console/api-tokens")
    expect(page.get_by_test_id("tokens-refused")).to_be_visible()
    expect(page.get_by_test_id("tokens-refused")).to_contain_text("may not do this")
    expect(page.get_by_test_id("token-row")).to_have_count(0)
    expect(page.get_by_test_id("apitoken-form")).to_be_hidden()
    token = page.evaluate("() => sessionStorage.getItem('nigehbaan.token')")
    listed = httpx.get(
        f"{server.base_url}/api/v1/api-tokens", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 403
