"""The audit log page in a real Chromium against a real server and broker.

Stories: an auditor follows the header's "Audit log" link, sees the chain
verified, finds an operator's failed sign-in by action and actor, and takes
a CSV and a JSON export that `nigehbaan server audit verify --file` accepts
offline with the fleet CA; an operator sees no link, and opening the page by
its address shows the server's refusal and no record.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

AUDITOR = Account("aud-log", "auditor", "ledger-" + secrets.token_hex(8))
OPERATOR = Account("op-log", "operator", "pillar-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("audit-log"), [AUDITOR, OPERATOR]) as p:
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


def _verify_file(path: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "server", "--db", "sqlite://", "audit",
         "verify", "--file", str(path), "--ca", str(ca)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("width", [1280, 360])
def test_an_auditor_finds_a_failed_sign_in_and_exports_what_verifies_offline(
    page: Page, server: ServerProcess, tmp_path: Path, width: int
) -> None:
    wrong = httpx.post(
        f"{server.base_url}/api/v1/login/access-token",
        data={"username": OPERATOR.username, "password": "not-the-password"},
    )
    assert wrong.status_code == 401
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, server, AUDITOR)
    page.get_by_test_id("nav-audit").click()
    expect(page.get_by_role("heading", name="Find records")).to_be_visible()
    expect(page.get_by_test_id("chain-status")).to_have_attribute("data-state", "ok")
    expect(page.get_by_test_id("chain-status")).to_contain_text("audit chain OK")
    expect(page.locator('[data-testid="audit-row"]').first).to_be_visible()

    page.get_by_test_id("f-action").fill("login.failed")
    page.get_by_test_id("f-object").fill(f"user:{OPERATOR.username}")
    page.get_by_test_id("audit-search").click()
    rows = page.locator('[data-testid="audit-row"]')
    expect(rows.first).to_have_attribute("data-action", "login.failed")
    expect(rows.first).to_contain_text("anonymous")
    assert all(a == "login.failed" for a in rows.evaluate_all(
        "rows => rows.map(r => r.dataset.action)"
    ))  # fmt: skip
    assert _overflow(page) <= 1
    _shot(page, tmp_path, f"audit-{width}")

    ca = server.data_dir / "pki" / "ca-chain.pem"
    for button, name in (("export-csv", "csv"), ("export-json", "json")):
        with page.expect_download() as download:
            page.get_by_test_id(button).click()
        saved = tmp_path / f"export.{name}"
        download.value.save_as(saved)
        assert download.value.suggested_filename.endswith(f".{name}")
        result = _verify_file(saved, ca)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "audit chain OK" in result.stdout
        assert b"login.failed" in saved.read_bytes()


def test_an_operator_sees_no_link_and_the_page_shows_the_refusal(
    page: Page, server: ServerProcess
) -> None:
    sign_in(page, server, OPERATOR)
    expect(page.get_by_test_id("nav-audit")).to_be_hidden()
    page.goto(f"{server.base_url}/console/audit")
    expect(page.get_by_test_id("audit-refused")).to_be_visible()
    expect(page.locator('[data-testid="audit-row"]')).to_have_count(0)
    expect(page.get_by_test_id("audit-filter")).to_be_hidden()
