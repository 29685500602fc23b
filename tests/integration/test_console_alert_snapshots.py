"""An operator sees, in a panic alert's details, which nearby cameras were asked for a still.

Story: a pillar is pressed; the server's record says two camera nodes were
asked (one on the pillar's site, one 120 m away). The one on the site has
answered with the SHA-256 of the still it keeps; the other's camera had no
frame. The operator opens the alert's "History" and reads both, at desktop
width and on a 360 px phone without the page growing wider than the screen.
The records are written into the running server's database (the pull
itself runs end to end in tests/e2e/test_e2e_panic_snapshots.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import Alert, NodeReply, utcnow
from fleet_server.models.snapshot import AlertSnapshot
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, FakePillar, alert_row, console_server, sign_in

OPERATOR = Account("op-snapshots", "operator", "stills-" + secrets.token_hex(8))
PILLAR = "lhr-snap-pillar-01"
SHA = "5f" * 32

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-snaps"), [OPERATOR]) as proc:
        yield proc


@pytest.fixture(scope="module")
def pressed(server: ServerProcess, broker: ManagedBroker) -> ServerProcess:
    """The pillar pressed (acked, so its alert is committed) and the pull recorded."""
    pillar = FakePillar(broker, PILLAR)
    pillar.start()
    try:
        pillar.press()
    finally:
        pillar.stop()
    _record_pull(server)
    return server


def _record_pull(server: ServerProcess) -> None:
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            alert = session.exec(select(Alert).where(col(Alert.node_id) == PILLAR)).one()
            now = utcnow()
            for request_id, node_id, reason, metres in (
                ("01JD0Q6000000000000000SNA1", "lhr-cam-0101", "same_site", None),
                ("01JD0Q6000000000000000SNA2", "lhr-cam-0102", "nearby", 120.4),
            ):
                session.add(
                    AlertSnapshot(
                        request_id=request_id, alert_id=alert.id, node_id=node_id,
                        reason=reason, distance_m=metres, requested_at=now,
                        expires_at=now + timedelta(seconds=60),
                    )
                )  # fmt: skip
                shots = (
                    [{"camera_id": "road", "sha256": SHA, "bytes": 20480, "width": 1280,
                      "height": 720, "frame_age_s": 0.2}] if reason == "same_site" else []
                )  # fmt: skip
                missing = [] if shots else [{"camera_id": "road", "reason": "no_frame"}]
                session.add(
                    NodeReply(
                        node_id=node_id, request_id=request_id, ok=True, ts=now,
                        result={"alert_id": alert.id, "snapshots": shots, "missing": missing},
                    )
                )  # fmt: skip
            session.commit()
    finally:
        engine.dispose()


@pytest.mark.parametrize("width", [1280, 360])
def test_the_alert_details_list_the_cameras_asked_and_what_each_kept(
    page: Page, pressed: ServerProcess, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, pressed, OPERATOR)
    row = alert_row(page, PILLAR)
    expect(row).to_have_count(1)
    row.get_by_test_id("action-details").click()
    box = page.get_by_test_id("details-snapshots")
    expect(box).to_be_visible()
    expect(box.get_by_role("heading")).to_have_text("Snapshots from nearby cameras")
    asked = box.get_by_test_id("snapshot-request")
    expect(asked).to_have_count(2)
    first = box.locator('[data-node-id="lhr-cam-0101"]')
    expect(first).to_contain_text("same site")
    expect(first.get_by_test_id("snapshot-kept")).to_contain_text(f"sha256:{SHA}")
    second = box.locator('[data-node-id="lhr-cam-0102"]')
    expect(second).to_contain_text("120 m away")
    expect(second.get_by_test_id("snapshot-missing")).to_have_text("road: no frame yet")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than the screen"
