"""The "Export evidence" action and legal holds in a real Chromium against a real server.

Story: a node's signed snapshot is on a panic alert (stored through the
server's own upload code, with a node certificate from the server's own
PKI). The operator presses "Export evidence" on the alert in the queue,
sees the file, views it for the stated purpose, and asks for an export;
the export waits for a second user. An auditor signs in elsewhere and
approves it; the operator downloads the bundle, which verifies with only
the fleet root certificate. The operator opens a case that holds the
alert's evidence; the auditor releases the hold.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import Browser, Page, expect
from sqlmodel import Session

from edge_agent.evidence_upload import sign_claim
from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.evidence import service
from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.evidence.verify import load_ca, verify_bundle
from fleet_server.models import Node, NodeCertificate, utcnow
from fleet_server.pki import IssuingCa, PkiPaths
from fleet_server.pki.ca import cert_pem
from proto.evidence import EvidenceClaim
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS
from tests.support.console import Account, alert_at, alert_row, console_server, seed_alerts, sign_in
from tests.support.pki import new_key

OPERATOR = Account("op-evidence", "operator", "ev-" + secrets.token_hex(8))
AUDITOR = Account("aud-evidence", "auditor", "ev-" + secrets.token_hex(8))
NODE = "lhr-cam-ev01"


def _photo() -> bytes:
    """A real JPEG (a grey gradient with a bright box), as a camera's still would be."""
    import cv2
    import numpy as np

    image = np.tile(np.linspace(40, 200, 160, dtype=np.uint8), (90, 1))
    image[30:60, 50:110] = 250
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    assert ok
    return bytes(encoded.tobytes())


PHOTO = _photo()
DATA_URL = re.compile(r"^data:image/jpeg;base64,")  # the viewed file, as the page shows it

SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(SHOTS) if SHOTS else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


@dataclass
class Seeded:
    server: ServerProcess
    alert_id: str
    sha256: str
    root: Path


@pytest.fixture(scope="module")
def seeded(broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp("fleet-evidence")
    with console_server(broker, data_dir, [OPERATOR, AUDITOR]) as proc:
        paths = PkiPaths(data_dir / "pki")
        assert paths.exists, "the development server makes its PKI at start"
        key = new_key()
        cert = IssuingCa(paths).issue_node(
            key=key.public_key(), node_id=NODE, serial=f"SN-{NODE}", now=utcnow(), days=5
        )
        pem = cert_pem(cert).decode("ascii")
        alert = alert_at(NODE, minutes_ago=1, district="lahore-gulberg")
        seed_alerts(proc, [alert])
        engine = make_engine(proc.db_url)
        store = LocalEvidenceStore(data_dir / "evidence")
        sha = hashlib.sha256(PHOTO).hexdigest()
        try:
            with Session(engine, expire_on_commit=False) as session:
                session.add(Node(node_id=NODE, hardware="sim", lifecycle="active",
                                 district="lahore-gulberg"))  # fmt: skip
                session.add(NodeCertificate(
                    serial=format(cert.serial_number, "x"), node_id=NODE,
                    hardware_serial=f"SN-{NODE}", key_sha256="0" * 64,
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    issued_via="token", pem=pem,
                ))  # fmt: skip
                session.commit()
                claim = EvidenceClaim(
                    sha256=sha, size=len(PHOTO), data_class="panic_snapshot", node_id=NODE,
                    camera_id="gate", captured_at=utcnow(), event_type="snapshot",
                    alert_id=alert.id,
                )  # fmt: skip
                trusted = load_ca(paths.chain.read_bytes())
                service.begin_upload(
                    session=session, node_id=NODE, cert_pem=pem,
                    signed=sign_claim(key, claim), trusted=trusted,
                    issuing=[x509.load_pem_x509_certificate(paths.issuing_cert.read_bytes())],
                    store=store, max_bytes=1 << 20,
                )  # fmt: skip
                service.append_chunk(
                    session=session, node_id=NODE, sha256=sha, offset=0, data=PHOTO, store=store
                )
        finally:
            engine.dispose()
        yield Seeded(proc, alert.id, sha, paths.root / "root-ca.pem")


def _second_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context.new_page()


def test_an_operator_exports_an_alert_s_evidence_after_an_auditor_approves_and_it_verifies(
    page: Page, browser: Browser, seeded: Seeded, tmp_path: Path
) -> None:
    sign_in(page, seeded.server, OPERATOR)
    row = alert_row(page, NODE)
    expect(row).to_be_visible()
    row.get_by_test_id("action-evidence").click()
    expect(page.get_by_role("heading", name="Evidence of an alert")).to_be_visible()
    expect(page.get_by_test_id("f-purpose")).to_have_value(f"alert:{seeded.alert_id}")
    expect(page.get_by_test_id("ev-row")).to_have_count(1)
    expect(page.get_by_test_id("ev-sha")).to_have_text(seeded.sha256)
    page.get_by_test_id("f-purpose").fill("fir:FIR-88/2026")
    page.get_by_test_id("ev-view").click()
    expect(page.get_by_test_id("ev-image")).to_have_attribute("src", DATA_URL)
    shown = page.wait_for_function(
        "() => document.querySelector('[data-testid=ev-image]').naturalWidth"
    )
    assert shown.json_value() == 160  # the browser decoded the node's JPEG
    _shot(page, tmp_path, "evidence-viewed")

    page.get_by_test_id("export-evidence").click()
    pending = page.get_by_test_id("ex-row").filter(has_text="fir:FIR-88/2026")
    expect(pending.get_by_test_id("ex-state")).to_have_text("pending")
    expect(pending.get_by_test_id("ex-approve")).to_have_count(0)  # not by the one who asked
    expect(pending.get_by_test_id("ex-download")).to_have_count(0)

    auditor = _second_page(browser)
    try:
        sign_in(auditor, seeded.server, AUDITOR)
        auditor.get_by_test_id("nav-evidence").click()
        asked = auditor.get_by_test_id("ex-row").filter(has_text="fir:FIR-88/2026")
        asked.get_by_test_id("ex-approve").click()
        expect(asked.get_by_test_id("ex-state")).to_have_text("approved")
    finally:
        auditor.context.close()

    page.reload()
    ready = page.get_by_test_id("ex-row").filter(has_text="fir:FIR-88/2026")
    with page.expect_download() as download:
        ready.get_by_test_id("ex-download").click()
    bundle = tmp_path / "bundle.zip"
    download.value.save_as(bundle)
    verdict = verify_bundle(bundle, trusted=load_ca(seeded.root.read_bytes()))
    assert verdict.ok, verdict.problems
    assert verdict.files == 1
    expect(ready.get_by_test_id("ex-state")).to_have_text("exported")
    _shot(page, tmp_path, "evidence-exported")


def test_an_operator_holds_an_alert_s_evidence_in_a_case_and_an_auditor_releases_it(
    page: Page, browser: Browser, seeded: Seeded
) -> None:
    sign_in(page, seeded.server, OPERATOR)
    page.goto(f"{seeded.server.base_url}/console/evidence?alert={seeded.alert_id}")
    expect(page.get_by_test_id("ev-row")).to_have_count(1)
    page.get_by_test_id("f-case-ref").fill("FIR-91/2026")
    page.get_by_test_id("f-case-district").fill("lahore-gulberg")
    page.get_by_test_id("case-open").click()
    case = page.get_by_test_id("case-row").filter(has_text="FIR-91/2026")
    expect(case.get_by_test_id("case-hold")).to_have_text("held")
    expect(page.get_by_test_id("ev-state")).to_have_text("stored, held")
    expect(case.get_by_test_id("case-release")).to_have_count(0)  # operators do not release

    auditor = _second_page(browser)
    try:
        sign_in(auditor, seeded.server, AUDITOR)
        auditor.goto(f"{seeded.server.base_url}/console/evidence?alert={seeded.alert_id}")
        held = auditor.get_by_test_id("case-row").filter(has_text="FIR-91/2026")
        auditor.once("dialog", lambda dialog: dialog.accept("court released it"))
        held.get_by_test_id("case-release").click()
        expect(held.get_by_test_id("case-hold")).to_have_text(f"released by {AUDITOR.username}")
        expect(auditor.get_by_test_id("ev-state")).to_have_text("stored")
    finally:
        auditor.context.close()


def test_the_evidence_page_fits_a_phone(browser: Browser, seeded: Seeded, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        sign_in(page, seeded.server, OPERATOR)
        page.goto(f"{seeded.server.base_url}/console/evidence?alert={seeded.alert_id}")
        expect(page.get_by_test_id("ev-row")).to_have_count(1)
        expect(page.get_by_test_id("export-evidence")).to_be_visible()
        _shot(page, tmp_path, "evidence-360px")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    finally:
        context.close()


def test_an_operator_asks_a_node_for_a_plate_crop_with_the_stated_purpose(
    page: Page, seeded: Seeded
) -> None:
    sign_in(page, seeded.server, OPERATOR)
    page.goto(f"{seeded.server.base_url}/console/evidence")
    page.get_by_test_id("f-purpose").fill("case:PLATE-5")
    page.get_by_test_id("f-rq-node").fill(NODE)
    page.get_by_test_id("f-rq-sha").fill("f" * 64)
    page.get_by_test_id("rq-send").click()
    expect(page.get_by_test_id("message-info").first).to_contain_text(f"Asked {NODE}")
    page.get_by_test_id("f-rq-node").fill("lhr-no-such-node")
    page.get_by_test_id("rq-send").click()
    expect(page.get_by_test_id("message-error").first).to_be_visible()  # 404: not in scope
