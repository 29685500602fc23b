"""The response-time page in a real Chromium against a real server.

The story: a month of closed panic alerts (every milestone stamped) is in the
server's database; the operator opens "Response times" from the nav, reads
p50/p90/p99 per district for the last 30 days, sees which districts miss
"90 % acknowledged within 15 s" (the slow towns of the seeded fleet), plots
drawn by the server, and exports the figures as CSV. Tightening the target
adds districts to the list. A fleet admin reads the page at phone width.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from simulators.console_fleet import TOWNS, seed_fleet
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

OPERATOR = Account("op-rt", "operator", "stopwatch-" + secrets.token_hex(8))
ADMIN = Account("admin-rt", "admin", "sundial-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")
# Towns whose control room takes 22 s or more to acknowledge (p50): their p90 is far past 15 s.
SLOW = {name for name, *_, ack_p50 in TOWNS if ack_p50 >= 22}
FAST = {name for name, *_, ack_p50 in TOWNS if ack_p50 <= 7.5}

PKT = timezone(timedelta(hours=5))

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("rt"), [OPERATOR, ADMIN]) as proc:
        engine = make_engine(proc.db_url)
        try:
            seed_fleet(engine, nodes=100, seed=7, prefix="rt", closed_alerts=600, history_days=25)
        finally:
            engine.dispose()
        yield proc


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def _open(page: Page, server: ServerProcess, account: Account) -> None:
    sign_in(page, server, account)
    page.get_by_test_id("nav-response-times").click()
    expect(page.get_by_test_id("response-page")).to_have_attribute("data-state", "ready")


def test_an_operator_sees_which_districts_miss_the_target_and_exports_csv(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    _open(page, server, OPERATOR)

    expect(page.get_by_test_id("target-text")).to_contain_text(
        "90 % received → acknowledged within 15 s"
    )
    expect(page.get_by_test_id("response-row")).to_have_count(len(TOWNS))
    missing = page.get_by_test_id("missing-district")
    expect(missing.first).to_be_visible()
    listed = {text.split(":")[0] for text in missing.all_inner_texts()}
    assert listed >= SLOW
    assert not listed & FAST
    for district in SLOW:
        row = page.locator(f'[data-testid="response-row"][data-district="{district}"]')
        expect(row).to_have_attribute("data-verdict", "missed")
    expect(page.get_by_test_id("stage-chart").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("chain-chart").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("period-text")).to_contain_text("PKT")
    _shot(page, tmp_path, "response-times-operator-1280")

    with page.expect_download() as download_info:
        page.get_by_test_id("csv-export").click()
    download = download_info.value
    assert download.suggested_filename.startswith("response-times-panic-")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert {row["district"] for row in rows} == {name for name, *_ in TOWNS}
    acked = [r for r in rows if r["stage"] == "received_to_acknowledged"]
    assert len(acked) == len(TOWNS)
    assert all(float(r["p50_s"]) <= float(r["p90_s"]) <= float(r["p99_s"]) for r in acked)

    # A stricter target: 90 % within 5 s. Every district misses it.
    page.get_by_test_id("target-s").fill("5")
    page.get_by_test_id("period-apply").click()
    expect(page.get_by_test_id("missing-count")).to_have_text(str(len(TOWNS)))


def test_a_short_period_has_fewer_alerts_than_the_whole_month(
    page: Page, server: ServerProcess
) -> None:
    _open(page, server, OPERATOR)
    month = sum(
        int(row.locator("td").nth(1).inner_text())
        for row in page.get_by_test_id("response-row").all()
    )
    page.get_by_test_id("period").select_option("24")
    page.get_by_test_id("period-apply").click()
    expect(page.get_by_test_id("response-page")).to_have_attribute("data-state", "ready")
    day = sum(
        int(row.locator("td").nth(1).inner_text())
        for row in page.get_by_test_id("response-row").all()
    )
    assert month > 0
    assert day < month

    # A chosen start date: ten days ago, PKT midnight; between a day and the month.
    page.get_by_test_id("period").select_option("date")
    since = (datetime.now(PKT) - timedelta(days=10)).date().isoformat()
    page.get_by_test_id("since-date").fill(since)
    page.get_by_test_id("period-apply").click()
    expect(page.get_by_test_id("period-text")).to_contain_text("00:00")
    ten_days = sum(
        int(row.locator("td").nth(1).inner_text())
        for row in page.get_by_test_id("response-row").all()
    )
    assert day < ten_days < month


def test_an_admin_reads_the_page_at_phone_width(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 360, "height": 780})
    sign_in(page, server, ADMIN)
    page.goto(f"{server.base_url}/console/response-times")
    expect(page.get_by_test_id("response-page")).to_have_attribute("data-state", "ready")
    expect(page.get_by_test_id("missing-district").first).to_be_visible()
    expect(page.get_by_test_id("stage-chart").locator("svg")).to_be_attached()
    expect(page.get_by_test_id("chain-chart").locator("svg")).to_be_attached()
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    _shot(page, tmp_path, "response-times-admin-360")
