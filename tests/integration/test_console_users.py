"""The Users and roles page in a real Chromium against a real server and broker.

Stories: a fleet admin follows the header's "Users" link, creates a
technician scoped to an agency and two districts, changes the role and the
scope, resets the password (the old one stops working) and disables the
account (it can no longer sign in); the admin
cannot switch off their own account; an operator and a technician see no
"Users" link, and opening the page by its address shows the server's refusal
and no user at all — the API answers them 403.
"""

from __future__ import annotations

import os
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

OPERATOR = Account("op-users", "operator", "pillar-" + secrets.token_hex(8))
ADMIN = Account("admin-users", "admin", "keys-" + secrets.token_hex(8))
TECHNICIAN = Account("tech-users", "technician", "ladder-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    accounts = [OPERATOR, ADMIN, TECHNICIAN]
    with console_server(broker, tmp_path_factory.mktemp("fleet-users"), accounts) as proc:
        yield proc


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


def _signs_in(server: ServerProcess, username: str, password: str) -> int:
    response = httpx.post(
        f"{server.base_url}/api/v1/login/access-token",
        data={"username": username, "password": password},
    )
    return response.status_code


def _row(page: Page, username: str) -> Locator:
    return page.locator(f'[data-testid="user-row"][data-username="{username}"]')


def test_an_admin_creates_a_technician_changes_the_role_resets_and_disables(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    sign_in(page, server, ADMIN)
    page.get_by_test_id("nav-users").click()
    expect(page.get_by_role("heading", name="New user")).to_be_visible()
    expect(page.get_by_test_id("nav-users")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("whoami")).to_have_text(f"{ADMIN.username} · admin")
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")
    expect(_row(page, ADMIN.username)).to_contain_text("(you)")

    first = "first-" + secrets.token_hex(6)
    page.get_by_label("User name").fill("tech-new")
    page.get_by_label("Role", exact=True).select_option("technician")
    page.get_by_label("First password").fill(first)
    page.get_by_test_id("new-agency").fill("PSCA")
    page.get_by_test_id("new-districts").fill("lahore-model, lahore-gulberg")
    page.get_by_test_id("user-create").click()
    row = _row(page, "tech-new")
    expect(row).to_be_visible()
    expect(row.get_by_label("Role of tech-new")).to_have_value("technician")
    expect(row.get_by_test_id("user-scope")).to_have_text("PSCA · lahore-gulberg, lahore-model")
    assert _signs_in(server, "tech-new", first) == 200

    row.get_by_label("Role of tech-new").select_option("operator")
    expect(page.get_by_test_id("message-info").first).to_contain_text("tech-new is now operator")
    expect(_row(page, "tech-new").get_by_label("Role of tech-new")).to_have_value("operator")

    _row(page, "tech-new").get_by_test_id("user-scope-edit").click()
    scope = page.get_by_test_id("scope-dialog")
    expect(scope).to_be_visible()
    expect(scope.get_by_test_id("scope-all")).not_to_be_checked()
    scope.get_by_test_id("scope-districts").fill("karachi-clifton")
    scope.get_by_test_id("scope-submit").click()
    expect(_row(page, "tech-new").get_by_test_id("user-scope")).to_have_text(
        "PSCA · karachi-clifton"
    )
    _row(page, "tech-new").get_by_test_id("user-scope-edit").click()
    scope.get_by_test_id("scope-all").check()
    scope.get_by_test_id("scope-submit").click()
    expect(_row(page, "tech-new").get_by_test_id("user-scope")).to_have_text(
        "PSCA · every district"
    )

    second = "second-" + secrets.token_hex(6)
    _row(page, "tech-new").get_by_test_id("user-reset").click()
    dialog = page.get_by_test_id("password-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("New password").fill("short")
    dialog.get_by_test_id("password-submit").click()
    expect(page.get_by_test_id("password-error")).to_be_visible()
    dialog.get_by_label("New password").fill(second)
    dialog.get_by_test_id("password-submit").click()
    expect(dialog).to_be_hidden()
    assert _signs_in(server, "tech-new", first) == 401
    assert _signs_in(server, "tech-new", second) == 200

    _row(page, "tech-new").get_by_test_id("user-disable").click()
    expect(_row(page, "tech-new").get_by_test_id("user-status")).to_have_text("disabled")
    assert _signs_in(server, "tech-new", second) == 401
    _shot(page, tmp_path, "users-desktop")

    page.set_viewport_size({"width": 360, "height": 800})
    expect(_row(page, "tech-new")).to_be_visible()
    assert _overflow(page) <= 0, "the users page is wider than a phone"
    _shot(page, tmp_path, "users-phone")

    _row(page, "tech-new").get_by_test_id("user-enable").click()
    expect(_row(page, "tech-new").get_by_test_id("user-status")).to_have_text("active")
    assert _signs_in(server, "tech-new", second) == 200


def test_an_admin_cannot_switch_off_their_own_account(page: Page, server: ServerProcess) -> None:
    sign_in(page, server, ADMIN)
    page.goto(f"{server.base_url}/console/users")
    _row(page, ADMIN.username).get_by_test_id("user-disable").click()
    expect(page.get_by_test_id("message-error").first).to_contain_text("your own account")
    expect(_row(page, ADMIN.username).get_by_test_id("user-status")).to_have_text("active")
    assert _signs_in(server, ADMIN.username, ADMIN.password) == 200


@pytest.mark.parametrize("account", [OPERATOR, TECHNICIAN], ids=["operator", "technician"])
def test_only_admins_reach_the_users_page_the_server_refuses_everyone_else(
    page: Page, server: ServerProcess, account: Account
) -> None:
    sign_in(page, server, account)
    expect(page.get_by_test_id("whoami")).to_have_text(f"{account.username} · {account.role}")
    expect(page.get_by_test_id("nav-users")).to_be_hidden()
    expect(page.get_by_test_id("nav-technician")).to_be_visible(
        visible=account.role == "technician"
    )

    page.goto(f"{server.base_url}/console/users")
    expect(page.get_by_test_id("users-refused")).to_be_visible()
    expect(page.get_by_test_id("users-refused")).to_contain_text("may not do this")
    expect(page.get_by_test_id("user-row")).to_have_count(0)
    expect(page.get_by_test_id("user-form")).to_be_hidden()

    token = page.evaluate("() => sessionStorage.getItem('nigehbaan.token')")
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{server.base_url}/api/v1/users", headers=headers)
    assert listed.status_code == 403
    made = httpx.post(
        f"{server.base_url}/api/v1/users",
        json={"username": "sneaky", "role": "admin", "password": "sneaky-password"},
        headers=headers,
    )
    assert made.status_code == 403
