"""The Plate reads page in a real Chromium against a real server and broker.

Story: an operator follows the header's "Plate reads" link, is asked once for
the purpose of the session (no read is shown before), states a case number,
sees the newest reads and the cameras' health, searches a plate exactly, then with one
look-alike character off (a read of LE8-6881 for LEB-6881), narrows by node,
pages through a busy camera's reads; on a phone the page is no wider than the
screen. The reads are written by the server's own ingest (`store_batch`) into
the running server's database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from fleet_server.alerting import load_policies
from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import DataAccess, utcnow
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PlateEvent, Telemetry, WireModel
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, console_server, sign_in

OPERATOR = Account("op-plates", "operator", "gate-" + secrets.token_hex(8))
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


def _seed(server: ServerProcess) -> None:
    now = utcnow()
    busy = [
        PlateEvent(
            node_id="lhr-cam-0002", ts=now, event_id=new_event_id(), seq=i + 1,
            camera_id="north", track_id=f"t{i}", plate=f"LEA-{i:03d}", confidence=0.8, frames=3,
        )
        for i in range(60)
    ]  # fmt: skip
    reads: list[WireModel] = [
        *busy,
        PlateEvent(
            node_id="lhr-cam-0001", ts=now, event_id=new_event_id(), seq=1, camera_id="gate",
            track_id="a", plate="LEB-6881", canonical="LEB6881", province="Punjab",
            layout="punjab-district", confidence=0.93, frames=7,
        ),
        PlateEvent(
            node_id="lhr-cam-0001", ts=now + timedelta(seconds=1), event_id=new_event_id(),
            seq=2, camera_id="gate", track_id="b", plate="LE8-6881", confidence=0.6, frames=2,
        ),
        Telemetry.model_validate(
            {"node_id": "lhr-cam-0001", "ts": now, "uptime_s": 60.0,
             "cameras": [{"camera_id": "gate", "frames_in": 5400, "frames_dropped": 3,
                          "motion_ratio": 0.12, "detector_ms": {"p50": 61.0, "p95": 95.0},
                          "reader_ms": {"p50": 43.0, "p95": 70.0}, "plates_per_hour": 2,
                          "shed": "slowed", "analytics_rate": 0.5}]}
        ),
    ]  # fmt: skip
    engine = make_engine(server.db_url)
    try:
        envelopes, _ = decode_all([(topic_for(m), encode(m)) for m in reads])
        with Session(engine, expire_on_commit=False) as session:
            policies = load_policies(session=session, ack_timeout_s=120)
            store_batch(session=session, envelopes=envelopes, now=now, policies=policies)
            session.commit()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-plates"), [OPERATOR]) as proc:
        _seed(proc)
        yield proc


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def _rows(page: Page) -> list[str]:
    return [str(r.get_attribute("data-canonical")) for r in page.get_by_test_id("plate-row").all()]


def test_an_operator_finds_a_plate_exactly_and_one_lookalike_off_and_pages(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    sign_in(page, server, OPERATOR)
    page.get_by_test_id("nav-plate-reads").click()
    expect(page.get_by_role("heading", name="Find a plate")).to_be_visible()
    expect(page.get_by_test_id("purpose-form")).to_be_visible()
    expect(page.get_by_test_id("plates-search")).to_be_disabled()
    expect(page.get_by_test_id("plate-row")).to_have_count(0)
    page.get_by_test_id("f-purpose-kind").select_option("case")
    page.get_by_test_id("f-purpose-ref").fill("PR-2026-9")
    page.get_by_test_id("purpose-save").click()
    expect(page.get_by_test_id("purpose-text")).to_have_text("case:PR-2026-9")
    expect(page.get_by_test_id("purpose-form")).to_be_hidden()
    expect(page.get_by_test_id("read-count")).to_have_text("62")
    camera = page.locator('[data-testid="camera-row"][data-camera="lhr-cam-0001/gate"]')
    expect(camera).to_contain_text("Slowed to 50 %")
    expect(camera).to_contain_text("61 / 95")

    page.get_by_test_id("f-plate").fill("leb 6881")
    page.get_by_test_id("plates-search").click()
    expect(page.get_by_test_id("read-count")).to_have_text("1")
    expect(page.get_by_test_id("plate-row")).to_contain_text("Punjab · punjab-district")

    page.get_by_test_id("f-match").select_option("fuzzy")
    page.get_by_test_id("plates-search").click()
    expect(page.get_by_test_id("read-count")).to_have_text("2")
    assert sorted(_rows(page)) == ["LE86881", "LEB6881"]
    _shot(page, tmp_path, "plates-desktop")

    page.get_by_test_id("plates-clear").click()
    page.get_by_test_id("f-node").fill("lhr-cam-0002")
    page.get_by_test_id("plates-search").click()
    expect(page.get_by_test_id("read-count")).to_have_text("60")
    expect(page.get_by_test_id("page-info")).to_have_text("1–50 of 60")
    page.get_by_test_id("older").click()
    expect(page.get_by_test_id("page-info")).to_have_text("51–60 of 60")
    expect(page.get_by_test_id("plate-row")).to_have_count(10)
    expect(page.get_by_test_id("older")).to_be_disabled()

    page.set_viewport_size({"width": 360, "height": 800})
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert int(overflow) <= 0, "the plate reads page is wider than a phone"
    _shot(page, tmp_path, "plates-phone")

    # Once per session: a reload keeps the purpose; every search was recorded with it.
    page.reload()
    expect(page.get_by_test_id("purpose-text")).to_have_text("case:PR-2026-9")
    expect(page.get_by_test_id("read-count")).to_have_text("62")
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            views = session.exec(
                select(DataAccess)
                .where(col(DataAccess.actor) == OPERATOR.username)
                .where(col(DataAccess.resource) == "plate_reads")
            ).all()
    finally:
        engine.dispose()
    assert len(views) >= 6
    assert {(v.purpose_kind, v.purpose_ref) for v in views} == {("case", "PR-2026-9")}
    assert "plate=leb 6881 match=fuzzy" in {v.object_id for v in views}

    # A purpose the server refuses is asked for again, and nothing is shown.
    page.get_by_test_id("purpose-change").click()
    page.get_by_test_id("f-purpose-kind").select_option("note")
    page.get_by_test_id("f-purpose-ref").fill("too short")
    page.get_by_test_id("purpose-save").click()
    expect(page.get_by_test_id("message-error").first).to_contain_text("note")
    expect(page.get_by_test_id("purpose-form")).to_be_visible()
    expect(page.get_by_test_id("plate-row")).to_have_count(0)
