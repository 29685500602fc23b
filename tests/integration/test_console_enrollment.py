"""The enrollment console page in a real Chromium against a real server.

The story: a fleet admin signs in, goes from the alert queue to the enrollment
page, makes a token (shown once, copyable), approves a node waiting in the
manual accept queue and rejects another, sees the certificates with their
expiry, and revokes one. Everything real: `nigehbaan server` in its own
process with a development PKI, the session's Mosquitto, Debian's Chromium.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.pki import csr_pem, new_key

ADMIN = "admin-enroll"
ADMIN_PASSWORD = "enroll-" + secrets.token_hex(8)

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("fleet-enroll"),
        broker_url=broker.url,
        extra_args=("--enrollment-manual-accept",),
        env={"ENROLL_ADMIN_PW": ADMIN_PASSWORD},
    )
    made = proc.run_cli("--create-admin", ADMIN, "--password-env", "ENROLL_ADMIN_PW")
    assert made.returncode == 0, made.stderr
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def ask_to_enroll(server: ServerProcess, serial: str) -> str:
    """A node with neither token nor preauthorization: it lands in the accept queue."""
    node_id = serial.lower()
    r = httpx.post(
        f"{server.base_url}/api/v1/enroll",
        json={"serial": serial, "csr_pem": csr_pem(new_key(), cn=node_id, serial=serial),
              "site_id": "gulberg-main-blvd", "district": "lahore-gulberg"},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["request_id"])


def sign_in_to_enrollment(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("nav-enrollment").click()
    expect(page.get_by_test_id("token-form")).to_be_visible()


def test_an_admin_makes_a_token_approves_a_node_and_revokes_it(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    accepted = ask_to_enroll(server, "LHR-UI-0001")
    rejected = ask_to_enroll(server, "LHR-UI-0002")
    sign_in_to_enrollment(page, server)

    page.get_by_test_id("token-district").fill("lahore-gulberg")
    page.get_by_test_id("token-create").click()
    value = page.get_by_test_id("token-value")
    expect(page.get_by_test_id("token-once")).to_be_visible()
    expect(value).to_contain_text("nbet_")
    assert value.inner_text().startswith("nbet_")
    page.get_by_test_id("token-copy").click()
    expect(page.get_by_test_id("message-info").first).to_be_visible()

    row = page.locator('[data-testid="pending-row"][data-node-id="lhr-ui-0001"]')
    expect(row).to_be_visible()
    row.get_by_test_id("action-accept").click()
    expect(row).to_have_count(0)
    other = page.locator('[data-testid="pending-row"][data-node-id="lhr-ui-0002"]')
    other.get_by_test_id("action-reject").click()
    expect(other).to_have_count(0)

    poll = httpx.get(f"{server.base_url}/api/v1/enroll/{accepted}")
    assert poll.status_code == 200
    assert poll.json()["node_id"] == "lhr-ui-0001"
    refusal = httpx.get(f"{server.base_url}/api/v1/enroll/{rejected}").json()["detail"]
    assert refusal["reason"] == "rejected"

    cert = page.locator('[data-testid="cert-row"][data-node-id="lhr-ui-0001"]')
    expect(cert.get_by_test_id("cert-state")).to_have_text("valid")
    expect(cert.get_by_test_id("cert-expiry")).not_to_have_text("—")
    page.screenshot(path=str(tmp_path / "enrollment.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    cert.get_by_test_id("action-revoke").click()

    expect(cert.get_by_test_id("cert-state")).to_have_text("revoked")
    expect(cert).to_have_attribute("data-revoked", "true")
    again = httpx.get(f"{server.base_url}/api/v1/enroll/{accepted}").json()["detail"]
    assert again["reason"] == "revoked"


def test_a_refusal_shows_the_servers_reason(page: Page, server: ServerProcess) -> None:
    sign_in_to_enrollment(page, server)
    page.get_by_test_id("token-hours").fill("9999")  # beyond the 30-day maximum

    page.get_by_test_id("token-create").click()

    error = page.get_by_test_id("message-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Token refused")
    expect(page.get_by_test_id("token-once")).to_be_hidden()
