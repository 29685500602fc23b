"""The operator's tools around the queue, in a real Chromium against a real server.

The stories (issue 11, item 14): someone opening the console for the first
time is asked to sign in, not told they were signed out; the action buttons
are whole at a control-room laptop's 800 px and a phone's 360 px; closing an
alert as "False alarm" or "Resolve" asks for confirmation and a reason, which
the alert's history then shows; a new P1 beeps and raises a desktop
notification unless the operator muted it; an operator is not offered the
enrollment page they may not use; a queue of thirty alerts can be narrowed and
searched, and closed alerts are found in a paged history.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS
from tests.support.console import (
    Account,
    FakePillar,
    alert_at,
    alert_row,
    console_server,
    seed_alerts,
    sign_in,
)

OPERATOR = Account("op-tools", "operator", "pillar-" + secrets.token_hex(8))
ADMIN = Account("admin-tools", "admin", "keys-" + secrets.token_hex(8))
TECHNICIAN = Account("tech-tools", "technician", "ladder-" + secrets.token_hex(8))
AUDITOR = Account("aud-tools", "auditor", "ledger-" + secrets.token_hex(8))
# Where the screenshots go for a person to look at; the test's tmp dir otherwise.
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS

_numbers = itertools.count(1)

# Records what the page asks of Web Audio and the Notification API, and says
# notifications are allowed, as an operator who clicked "Allow" would have.
RECORD_ALARMS = """
window.__beeps = [];
window.__notices = [];
const realStart = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__beeps.push(this.frequency.value);
  return realStart.apply(this, args);
};
class RecordedNotification {
  static permission = "granted";
  static requestPermission() {
    RecordedNotification.permission = "granted";
    return Promise.resolve("granted");
  }
  constructor(title, options) { window.__notices.push({ title, ...(options || {}) }); }
  close() {}
}
window.Notification = RecordedNotification;
"""


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    accounts = [OPERATOR, ADMIN, TECHNICIAN, AUDITOR]
    with console_server(broker, tmp_path_factory.mktemp("fleet"), accounts) as proc:
        yield proc


@pytest.fixture
def pillar(broker: ManagedBroker, server: ServerProcess) -> Iterator[FakePillar]:
    node = FakePillar(broker, f"lhr-tools-{next(_numbers):04d}")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _district() -> str:
    """A district of the test's own, so alerts seeded by other tests stay out of its view."""
    return f"test-district-{next(_numbers):04d}"


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


# ---------------------------------------------------------------- sign-in


def test_a_first_visit_asks_to_sign_in_without_saying_the_visitor_was_signed_out(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.base_url}/console/")

    expect(page.get_by_test_id("login-form")).to_be_visible()
    # The sign-in script has run (it writes its message, then focuses the field).
    expect(page.get_by_label("User name")).to_be_focused()
    assert "signed out" not in page.get_by_test_id("message-area").inner_text()

    sign_in(page, server, OPERATOR)
    page.get_by_test_id("logout").click()

    expect(page.get_by_test_id("message-area")).to_contain_text("You are signed out.")


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("width", [800, 360, 1024, 1280, 1500])
def test_the_action_buttons_are_whole_at_a_laptops_and_a_phones_width(
    browser: Browser, server: ServerProcess, pillar: FakePillar, tmp_path: Path, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 500)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        sign_in(page, server, OPERATOR)
        pillar.press()
        row = alert_row(page, pillar.node_id)
        expect(row.get_by_test_id("action-false_alarm")).to_be_visible()
        _shot(page, tmp_path, f"queue-{width}px")

        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than {width}px"
        queue = page.locator("section.queue").first.bounding_box()
        assert queue is not None
        buttons = row.get_by_test_id("alert-actions").locator("button")
        assert buttons.count() >= 4
        for n in range(buttons.count()):
            box = buttons.nth(n).bounding_box()
            assert box is not None
            label = buttons.nth(n).inner_text()
            assert box["x"] >= queue["x"], f"{label} starts left of the queue at {width}px"
            assert box["x"] + box["width"] <= queue["x"] + queue["width"], (
                f"{label} is clipped at the queue's right edge at {width}px"
            )
            assert box["height"] >= 36, f"{label} is too small to touch at {width}px"
    finally:
        context.close()


# ---------------------------------------------------------------- confirmation


@pytest.mark.parametrize(
    ("action", "label", "reason"),
    [
        ("false_alarm", "False alarm", "Children playing with the button, seen on camera 3"),
        ("resolved", "Resolved", "Patrol 12 escorted the caller home"),
    ],
)
def test_closing_an_alert_asks_for_confirmation_and_a_reason_kept_in_its_history(
    page: Page,
    server: ServerProcess,
    pillar: FakePillar,
    tmp_path: Path,
    action: str,
    label: str,
    reason: str,
) -> None:
    sign_in(page, server, OPERATOR)
    pillar.press()
    row = alert_row(page, pillar.node_id)
    dialog = page.get_by_test_id("confirm-dialog")

    row.get_by_test_id(f"action-{action}").click()
    expect(dialog).to_be_visible()
    page.get_by_test_id("confirm-cancel").click()
    expect(dialog).to_be_hidden()
    expect(row.get_by_test_id("alert-state")).to_have_text("New")

    row.get_by_test_id(f"action-{action}").click()
    page.get_by_test_id("confirm-submit").click()  # no reason given
    expect(page.get_by_test_id("confirm-error")).to_be_visible()
    expect(row.get_by_test_id("alert-state")).to_have_text("New")

    page.get_by_test_id("confirm-reason").fill(reason)
    _shot(page, tmp_path, f"confirm-{action}")
    page.get_by_test_id("confirm-submit").click()

    expect(dialog).to_be_hidden()
    expect(row.get_by_test_id("alert-state")).to_have_text(label)
    row.get_by_test_id("action-details").click()
    details = page.get_by_test_id("alert-details")
    expect(details).to_be_visible()
    step = details.locator(f'[data-testid="history-step"][data-to-state="{action}"]')
    expect(step).to_contain_text(reason)
    expect(step).to_contain_text(OPERATOR.username)
    _shot(page, tmp_path, f"details-{action}")


# ---------------------------------------------------------------- alarms


def test_a_new_p1_beeps_and_notifies_the_desktop_unless_the_operator_muted_it(
    page: Page, server: ServerProcess, broker: ManagedBroker, pillar: FakePillar
) -> None:
    page.add_init_script(RECORD_ALARMS)
    sign_in(page, server, OPERATOR)
    expect(page.get_by_test_id("sound-toggle")).to_have_attribute("aria-pressed", "true")

    pillar.press()

    expect(alert_row(page, pillar.node_id)).to_be_visible()
    page.wait_for_function("() => window.__beeps.length > 0")
    notices = page.evaluate("() => window.__notices")
    assert [n for n in notices if pillar.node_id in n["title"] + n.get("body", "")], notices

    page.get_by_test_id("sound-toggle").click()
    expect(page.get_by_test_id("sound-toggle")).to_have_attribute("aria-pressed", "false")
    page.reload()  # the choice is kept in this browser
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("sound-toggle")).to_have_attribute("aria-pressed", "false")
    second = FakePillar(broker, f"lhr-tools-{next(_numbers):04d}")
    second.start()
    try:
        second.press()
        expect(alert_row(page, second.node_id)).to_be_visible()
    finally:
        second.stop()
    assert page.evaluate("() => window.__beeps.length") == 0
    # Muting the sound keeps the desktop notification: it is silent.
    notices = page.evaluate("() => window.__notices")
    assert [n for n in notices if second.node_id in n["title"] + n.get("body", "")], notices


def test_notifications_are_enabled_from_a_button(page: Page, server: ServerProcess) -> None:
    page.add_init_script(
        RECORD_ALARMS.replace('static permission = "granted"', 'static permission = "default"')
    )
    sign_in(page, server, OPERATOR)
    enable = page.get_by_test_id("notify-enable")
    expect(enable).to_be_visible()
    enable.click()
    expect(enable).to_be_hidden()


# ---------------------------------------------------------------- roles


@pytest.mark.parametrize(
    ("account", "offered"), [(OPERATOR, False), (AUDITOR, False), (ADMIN, True), (TECHNICIAN, True)]
)
def test_the_enrollment_link_is_offered_only_to_roles_that_may_enroll(
    page: Page, server: ServerProcess, account: Account, offered: bool
) -> None:
    sign_in(page, server, account)
    expect(page.get_by_test_id("whoami")).to_contain_text(account.role)
    link = page.get_by_test_id("nav-enrollment")
    if offered:
        expect(link).to_be_visible()
    else:
        expect(link).to_be_hidden()


# ---------------------------------------------------------------- filters and history


def test_thirty_open_alerts_narrow_by_state_type_severity_district_and_search(
    page: Page, server: ServerProcess, pillar: FakePillar
) -> None:
    district, other = _district(), _district()
    kinds = [("panic", "P1"), ("tamper", "P2"), ("power", "P3")]
    states = ["new", "acknowledged", "dispatched"]
    alerts = [
        alert_at(
            f"lhr-busy-{n:02d}",
            minutes_ago=60 - n,
            state=states[n % 3],
            alert_type=kinds[(n // 3) % 3][0],
            severity=kinds[(n // 3) % 3][1],
            district=district if n < 24 else other,
        )
        for n in range(30)
    ]
    seed_alerts(server, alerts)
    sign_in(page, server, OPERATOR)
    rows = page.locator('[data-testid="alert-row"]:visible')
    filters = page.get_by_test_id("alert-filters")

    filters.get_by_label("District").select_option(district)
    expect(rows).to_have_count(24)
    filters.get_by_label("Severity").select_option("P2")
    expect(rows).to_have_count(sum(1 for a in alerts[:24] if a.severity == "P2"))
    filters.get_by_label("Type").select_option("tamper")
    filters.get_by_label("State").select_option("acknowledged")
    expected = {a.node_id for a in alerts[:24] if a.type == "tamper" and a.state == "acknowledged"}
    expect(rows).to_have_count(len(expected))
    assert {rows.nth(n).get_attribute("data-node-id") for n in range(len(expected))} == expected
    expect(page.get_by_test_id("filter-summary")).to_contain_text(f"{len(expected)} of")

    page.get_by_test_id("filter-clear").click()
    filters.get_by_label("Search").fill("lhr-busy-27")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-node-id", "lhr-busy-27")
    filters.get_by_label("Search").fill(alerts[5].id)
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-alert-id", alerts[5].id)

    # A press that arrives live is shown whatever the filters say.
    pillar.press()
    expect(alert_row(page, pillar.node_id)).to_be_visible()
    expect(rows).to_have_count(2)


def test_closed_alerts_are_found_in_a_paged_history_with_their_reasons(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    district = _district()
    reason = "Caller confirmed it was a mistake"
    alerts = [
        alert_at(
            f"lhr-past-{n:02d}",
            minutes_ago=600 - n,
            state="false_alarm" if n % 3 == 0 else "resolved",
            district=district,
        )
        for n in range(30)
    ]
    seed_alerts(server, alerts, note=reason)
    sign_in(page, server, OPERATOR)

    page.get_by_test_id("view-history").click()
    filters = page.get_by_test_id("alert-filters")
    filters.get_by_label("District").select_option(district)
    history = page.locator('[data-testid="history-row"]')
    expect(history).to_have_count(25)
    expect(page.get_by_test_id("history-page")).to_contain_text("1–25 of 30")
    newest = sorted(alerts, key=lambda a: a.received_at, reverse=True)
    expect(history.first).to_have_attribute("data-alert-id", newest[0].id)
    _shot(page, tmp_path, "history-1280px")

    page.get_by_test_id("history-next").click()
    expect(history).to_have_count(5)
    expect(page.get_by_test_id("history-page")).to_contain_text("26–30 of 30")
    page.get_by_test_id("history-prev").click()
    expect(history).to_have_count(25)

    filters.get_by_label("State").select_option("false_alarm")
    expect(history).to_have_count(10)
    filters.get_by_label("Search").fill("lhr-past-03")
    expect(history).to_have_count(1)

    history.first.get_by_test_id("action-details").click()
    step = page.get_by_test_id("alert-details").locator(
        '[data-testid="history-step"][data-to-state="false_alarm"]'
    )
    expect(step).to_contain_text(reason)
