"""The watchlist-hit page in a real Chromium against a real server, broker and hit events.

Story: a camera node on the broker reports watchlist hits the way a node does
(a `watchlist_hit` event re-sent until the server acks it). An operator opens
"Watchlist hits", states a purpose before anything is shown, and sees a
confusable hit arrive live with the look-alike character marked; from the
keyboard alone they try to dispatch it (refused, and the page says why),
open the list entry (the view is recorded with their purpose) and reject it
with a reason, which closes the alert and counts as a false accept. On a
360 px phone an exact hit is confirmed, after which its alert can be
dispatched. A face hit shows, on "Show photos" (P), the node's crop beside
the listed person's enrolment photo, both decoded by the browser and each
view recorded with the purpose and the hit's alert; a hit whose crop has not
reached the server says so in words and can ask the node for it. An
operator scoped to another district sees no hit at all.
"""

from __future__ import annotations

import hashlib
import math
import queue
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlmodel import Session, col, select

from fleet_server.broker import ManagedBroker
from fleet_server.db import make_engine
from fleet_server.models import Alert, DataAccess, utcnow
from fleet_server.models.audit import AuditRecord
from proto.codec import encode
from proto.ids import new_event_id
from proto.messages import WatchlistHitEvent
from proto.topics import event_topic
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS, UI_TIMEOUT_MS
from tests.support.console import MQTT_TIMEOUT_S, Account, FakePillar, console_server, sign_in
from tests.support.hit_evidence import seed_crop, seed_photo, tiny_png

ADMIN = Account("wl-admin", "admin", "lists-" + secrets.token_hex(8))
OPERATOR = Account("wl-op", "operator", "desk-" + secrets.token_hex(8))
OUTSIDER = Account("wl-karachi", "operator", "elsewhere-" + secrets.token_hex(8))
NODE = "lhr-wlcam-0001"  # FakePillar's birth puts it in lahore-gulberg
API = "/api/v1"
NOTE = "white Corolla, FIR 1187/26 Gulberg"
ENTRY: dict[str, str] = {}  # the listed plate's (and person's) entry ids, once made
CROP_PNG = tiny_png(40, 30, (190, 150, 120))  # what the node's camera captured
ENROLMENT_PNG = tiny_png(24, 32, (200, 160, 130))  # the photo the person was listed with

pytestmark = BROWSER_MARKS


def _api(server: ServerProcess, account: Account) -> httpx.Client:
    token = server.login(account.username, account.password)
    return httpx.Client(
        base_url=f"{server.base_url}{API}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    accounts = [ADMIN, OPERATOR, OUTSIDER]
    with console_server(broker, tmp_path_factory.mktemp("fleet-hits"), accounts) as proc:
        with _api(proc, ADMIN) as admin:
            made = admin.post(
                "/watchlists",
                json={"name": "stolen-lhr", "category": "stolen_vehicle",
                      "purpose": "stolen vehicles, Lahore", "owner_agency": "Punjab Police",
                      "districts": ["lahore-gulberg"],
                      "expires_at": f"{utcnow().year + 1}-01-01T00:00:00Z"},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            entry = admin.post(
                "/watchlists/stolen-lhr/entries", json={"plate": "LEB-6881", "note": NOTE}
            )
            assert entry.status_code == 201, entry.text
            ENTRY["id"] = entry.json()["id"]
            wanted = admin.post(
                "/watchlists",
                json={"name": "wanted-lhr", "category": "wanted_person",
                      "purpose": "warrants, Lahore", "owner_agency": "Punjab Police",
                      "districts": ["lahore-gulberg"],
                      "expires_at": f"{utcnow().year + 1}-01-01T00:00:00Z"},
            )  # fmt: skip
            assert wanted.status_code == 201, wanted.text
            person = admin.post(
                "/watchlists/wanted-lhr/entries", json={"kind": "person", "note": "W-77"}
            )
            assert person.status_code == 201, person.text
            ENTRY["person"] = person.json()["id"]
            users = {u["username"]: u["id"] for u in admin.get("/users").json()["data"]}
            scoped = admin.patch(
                f"/users/{users[OUTSIDER.username]}", json={"districts": ["karachi"]}
            )
            assert scoped.status_code == 200, scoped.text
        yield proc


@pytest.fixture(scope="module")
def camera(broker: ManagedBroker, server: ServerProcess) -> Iterator[FakePillar]:
    node = FakePillar(broker, NODE)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def send_hit(server: ServerProcess, node: FakePillar, *, read: str, match: str) -> str:
    """One hit as a node sends it: re-sent until acked (committed at the server)."""
    node._seq += 1
    event = WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=node._seq,
        watchlist_id="stolen-lhr", watchlist_version=2,
        entry_id=ENTRY["id"].lower(),
        match=match, camera_id="gate", track_id=f"t-{node._seq}", plate=read, listed="LEB6881",
        confidence=0.81, frames=6, snapshot_sha256="c0ffee" * 10 + "abcd",
    )  # fmt: skip
    return publish_hit(node, event)


def face_hit(node: FakePillar, crop_sha256: str) -> WatchlistHitEvent:
    """A face hit on the listed person, its crop named by SHA-256 (sent by `publish_hit`)."""
    node._seq += 1
    return WatchlistHitEvent(
        node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=node._seq,
        watchlist_id="wanted-lhr", watchlist_version=3, entry_id=ENTRY["person"].lower(),
        subject="person", match="face", camera_id="gate", track_id=f"face-{node._seq}",
        confidence=0.71, score=0.71, frames=5, snapshot_sha256=crop_sha256,
    )  # fmt: skip


def publish_hit(node: FakePillar, event: WatchlistHitEvent) -> str:
    """Re-send `event` until the server acks it (committed); its event id."""
    deadline = time.monotonic() + MQTT_TIMEOUT_S
    while time.monotonic() < deadline:
        node._publish(event_topic(NODE, "watchlist_hit"), encode(event))
        try:
            while node.acked.get(timeout=1.0) != event.event_id:
                pass
        except queue.Empty:
            continue
        return event.event_id
    raise AssertionError(f"server never acked hit {event.event_id}")


def open_hits(page: Page, server: ServerProcess, account: Account, purpose: str) -> None:
    sign_in(page, server, account)
    page.get_by_test_id("nav-watchlist-hits").click()
    expect(page.get_by_role("heading", name="Why are you viewing watchlist hits?")).to_be_visible()
    expect(page.get_by_test_id("hit")).to_have_count(0)
    kind, _, reference = purpose.partition(":")
    page.get_by_test_id("purpose-kind").select_option(kind)
    page.get_by_test_id("purpose-ref").fill(reference)
    page.get_by_test_id("purpose-submit").click()
    expect(page.get_by_test_id("purpose-text")).to_have_text(purpose)
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")


def hit_card(page: Page, event_id: str) -> Locator:
    return page.locator(f'[data-testid="hit"][data-event-id="{event_id}"]')


def test_a_confusable_hit_arrives_live_is_refused_dispatch_and_rejected_from_the_keyboard(
    page: Page, server: ServerProcess, camera: FakePillar
) -> None:
    open_hits(page, server, OPERATOR, "note:night shift watch desk, Gulberg")
    event_id = send_hit(server, camera, read="LE86881", match="confusable")
    card = hit_card(page, event_id)
    expect(card).to_be_visible()  # live: no reload
    expect(card.get_by_test_id("hit-match")).to_have_attribute("data-match", "confusable")
    expect(card.get_by_test_id("hit-match")).to_contain_text("CONFUSABLE")
    expect(card.get_by_test_id("hit-read").locator("mark")).to_have_text("8")
    expect(card.get_by_test_id("hit-listed").locator("mark")).to_have_text("B")
    expect(card.get_by_test_id("hit-crop")).to_contain_text("sha256:c0ffee")
    expect(card.get_by_test_id("hit-gate")).to_contain_text("Dispatch locked")

    card.focus()
    page.keyboard.press("d")  # dispatch: the server refuses and the page says why
    expect(page.get_by_test_id("message-error").first).to_contain_text(
        "waiting for a person to confirm"
    )
    hit_card(page, event_id).focus()
    page.keyboard.press("e")
    expect(hit_card(page, event_id).get_by_test_id("entry-note")).to_have_text(NOTE)
    hit_card(page, event_id).focus()
    page.keyboard.press("r")
    dialog = page.get_by_test_id("decide-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("decide-reason")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # Cancel, then the submit button
    expect(page.get_by_test_id("decide-submit")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("decide-error")).to_be_visible()  # a reason is required
    page.get_by_test_id("decide-reason").fill("Mehran, not a Corolla; plate reads LEB")
    page.get_by_test_id("decide-submit").press("Enter")
    expect(hit_card(page, event_id)).to_have_count(0)
    expect(page.get_by_test_id("message-info").first).to_contain_text("false alarm")
    with _api(server, OPERATOR) as op:
        figures = op.get("/watchlist-hits/false-accepts").json()["by_watchlist"]["stolen-lhr"]
    assert figures["rejected"] >= 1
    row = page.locator('[data-testid="figure-row"][data-watchlist="stolen-lhr"]')
    expect(row.locator("td").nth(2)).to_have_text(str(figures["rejected"]))
    percent = math.floor(100 * figures["false_accept_rate"] + 0.5)  # as JS Math.round
    expect(row.locator("td").nth(4)).to_have_text(f"{percent} %")

    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            alert = session.exec(select(Alert).where(col(Alert.first_event_id) == event_id)).one()
            assert alert.state == "false_alarm"
            views = session.exec(
                select(DataAccess).where(col(DataAccess.actor) == OPERATOR.username)
            ).all()
    finally:
        engine.dispose()
    kinds = {(v.resource, v.purpose_kind, v.purpose_ref) for v in views}
    assert ("watchlist_entry", "note", "night shift watch desk, Gulberg") in kinds
    assert ("watchlist_hits", "note", "night shift watch desk, Gulberg") in kinds


def test_on_a_phone_an_exact_hit_is_confirmed_and_its_alert_can_then_be_dispatched(
    browser: Browser, server: ServerProcess, camera: FakePillar
) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        open_hits(page, server, OPERATOR, "case:LHR-2026-311")
        event_id = send_hit(server, camera, read="LEB6881", match="exact")
        card = hit_card(page, event_id)
        expect(card.get_by_test_id("hit-match")).to_contain_text("EXACT")
        expect(card.get_by_test_id("hit-read").locator("mark")).to_have_count(0)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a 360 px screen"
        card.get_by_test_id("hit-confirm").click()
        page.get_by_test_id("decide-reason").fill("plate and car match the FIR photo")
        page.get_by_test_id("decide-submit").click()
        expect(hit_card(page, event_id)).to_have_count(0)
        expect(page.get_by_test_id("message-info").first).to_contain_text("may now be dispatched")
    finally:
        context.close()
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            alert = session.exec(select(Alert).where(col(Alert.first_event_id) == event_id)).one()
    finally:
        engine.dispose()
    with _api(server, OPERATOR) as op:
        moved = op.post(f"/alerts/{alert.id}/transitions", json={"to": "dispatched"})
    assert moved.status_code == 201, moved.text


def test_an_operator_of_another_district_sees_no_hit(
    page: Page, server: ServerProcess, camera: FakePillar
) -> None:
    open_hits(page, server, OUTSIDER, "case:KHI-2026-5")
    event_id = send_hit(server, camera, read="LE86881", match="confusable")
    page.reload()  # the hit is committed (acked): a fresh load is the whole truth
    expect(page.get_by_test_id("purpose-text")).to_have_text("case:KHI-2026-5")
    expect(page.get_by_test_id("queue-empty")).to_have_text("No hit is waiting.")
    expect(page.get_by_test_id("hit")).to_have_count(0)
    with _api(server, OUTSIDER) as outsider:
        entry = outsider.get(
            f"/watchlist-hits/{event_id}/entry", headers={"X-Purpose": "case:KHI-2026-5"}
        )
    assert entry.status_code == 404


def test_a_face_hit_shows_the_crop_beside_the_enrolment_photo_on_a_phone(
    browser: Browser, server: ServerProcess, camera: FakePillar
) -> None:
    engine = make_engine(server.db_url)
    try:
        seed_photo(engine, server.data_dir, ENROLMENT_PNG, entry_id=ENTRY["person"])
        event = face_hit(camera, hashlib.sha256(CROP_PNG).hexdigest())
        crop = seed_crop(
            engine, server.data_dir, CROP_PNG, node_id=NODE, district="lahore-gulberg",
            event_id=event.event_id,
        )  # fmt: skip
        waiting = face_hit(camera, "ab" * 32)  # its crop never reached the server
    finally:
        engine.dispose()
    context = browser.new_context(viewport={"width": 360, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        open_hits(page, server, OPERATOR, "case:LHR-FACE-12")
        publish_hit(camera, event)
        publish_hit(camera, waiting)
        card = hit_card(page, event.event_id)
        expect(card.get_by_test_id("hit-match")).to_contain_text("FACE")
        expect(card.get_by_test_id("hit-score")).to_contain_text("0.71")
        expect(card.get_by_test_id("hit-frames")).to_contain_text("5 of track")
        expect(card.get_by_test_id("hit-crop-figure")).to_have_attribute("data-state", "stored")
        expect(card.get_by_test_id("hit-crop-img")).to_have_count(0)  # nothing viewed unasked

        card.focus()
        page.keyboard.press("p")
        card = hit_card(page, event.event_id)
        shot, enrolled = (
            card.get_by_test_id("hit-crop-img"),
            card.get_by_test_id("hit-enrolment-img"),
        )
        expect(shot).to_be_visible()
        expect(enrolled).to_have_count(1)
        expect(card).to_be_focused()  # the keyboard stays on the hit
        expect(card.get_by_test_id("entry-person")).to_have_text("1 enrolment photo")
        decoded = "i => i.complete ? i.naturalWidth + 'x' + i.naturalHeight : 'loading'"
        page.wait_for_function(
            """() => [...document.querySelectorAll(
                 '[data-testid=hit-crop-img], [data-testid=hit-enrolment-img]')]
               .every(i => i.complete && i.naturalWidth > 0)"""
        )
        assert shot.evaluate(decoded) == "40x30"  # the browser decoded the node's bytes
        assert enrolled.evaluate(decoded) == "24x32"
        left, right = shot.bounding_box(), enrolled.bounding_box()
        assert left is not None
        assert right is not None
        assert left["x"] + left["width"] <= right["x"], "the two pictures are side by side"
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a 360 px screen"

        later = hit_card(page, waiting.event_id)
        expect(later.get_by_test_id("hit-crop-state")).to_contain_text("Not on the server yet")
        expect(later.locator("img")).to_have_count(0)
        later.get_by_test_id("hit-crop-request").click()
        expect(hit_card(page, waiting.event_id).get_by_test_id("hit-crop-state")).to_contain_text(
            "Asked of the node"
        )
    finally:
        context.close()
    engine = make_engine(server.db_url)
    try:
        with Session(engine) as session:
            alert = session.exec(
                select(Alert).where(col(Alert.first_event_id) == event.event_id)
            ).one()
            views = session.exec(
                select(AuditRecord)
                .where(col(AuditRecord.action) == "data.viewed")
                .where(col(AuditRecord.object).in_([f"evidence:{crop}"]) |
                       col(AuditRecord.object).like("watchlist_photo:%"))
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    recorded = {(v.object.split(":")[0], v.detail.get("alert_id"), v.detail["reference"])
                for v in views if v.actor == f"user:{OPERATOR.username}"}  # fmt: skip
    assert recorded == {
        ("evidence", alert.id, "LHR-FACE-12"),
        ("watchlist_photo", alert.id, "LHR-FACE-12"),
    }
