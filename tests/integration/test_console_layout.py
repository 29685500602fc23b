"""Every console page shares one top bar, and the pages keep to accessibility basics.

Stories: an operator, a fleet admin and a technician each see the page links
their role may use, who they are signed in as, and a live-feed indicator
that says "Live" on every page (not only the queue); the current page is
marked in the navigation. On the alert queue, the users page and the
technician page every form control and button has a name a screen reader
can say, and all visible text meets WCAG AA contrast against its
background.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess
from tests.support.browser import BROWSER_MARKS
from tests.support.console import Account, alert_at, console_server, seed_alerts, sign_in

OPERATOR = Account("op-layout", "operator", "pillar-" + secrets.token_hex(8))
ADMIN = Account("admin-layout", "admin", "keys-" + secrets.token_hex(8))
TECHNICIAN = Account("tech-layout", "technician", "ladder-" + secrets.token_hex(8))

pytestmark = BROWSER_MARKS

# The role-gated links of the shared navigation (templates/_nav.html).
GATED = {"nav-enrollment", "nav-technician", "nav-users"}
OFFERED = {
    "operator": set(),
    "admin": {"nav-enrollment", "nav-technician", "nav-users"},
    "technician": {"nav-enrollment", "nav-technician"},
}
PAGES = {
    "operator": ["/console/", "/console/power"],
    "admin": ["/console/", "/console/power", "/console/enrollment", "/console/users",
              "/console/technician"],
    "technician": ["/console/", "/console/power", "/console/enrollment", "/console/technician"],
}  # fmt: skip

# WCAG 2.x contrast of every visible text element against the first opaque
# background behind it; large text (24 px, or 18.66 px bold) needs 3:1, the rest 4.5:1.
CONTRAST = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(',').map((x) => parseFloat(x));
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a >= 0.99) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const failures = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || parseFloat(style.opacity) < 0.99) continue;
    if (el.closest('[hidden], dialog:not([open]), .skip-link, option')) continue;
    const fg = parse(style.color);
    const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const bold = parseInt(style.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) {
      failures.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim()
        .slice(0, 30)}" ${ratio.toFixed(2)} < ${need}`);
    }
  }
  return failures;
}
"""

# Every visible control has a name: a <label>, aria-label(ledby), or its text.
UNNAMED = """
() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter((el) => el.getClientRects().length && !el.closest('[hidden]'))
  .filter((el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
    if (el.labels && el.labels.length) return false;
    if (['BUTTON', 'A'].includes(el.tagName) && el.textContent.trim()) return false;
    return true;
  })
  .map((el) => el.outerHTML.slice(0, 80))
"""


@pytest.fixture(scope="module")
def server(
    broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    accounts = [OPERATOR, ADMIN, TECHNICIAN]
    with console_server(broker, tmp_path_factory.mktemp("fleet-layout"), accounts) as proc:
        seed_alerts(
            proc,
            [
                alert_at("lhr-layout-0001", minutes_ago=3),
                alert_at("lhr-layout-0002", minutes_ago=9, severity="P2", alert_type="tamper"),
                alert_at("lhr-layout-0003", minutes_ago=20, severity="P3", alert_type="offline"),
            ],
        )
        yield proc


@pytest.mark.parametrize("account", [OPERATOR, ADMIN, TECHNICIAN], ids=lambda a: a.role)
def test_every_page_shows_the_roles_links_the_user_and_a_live_feed(
    page: Page, server: ServerProcess, account: Account
) -> None:
    sign_in(page, server, account)
    for path in PAGES[account.role]:
        page.goto(f"{server.base_url}{path}")
        nav = page.get_by_test_id("console-nav")
        expect(nav).to_be_visible()
        expect(page.get_by_test_id("whoami")).to_have_text(f"{account.username} · {account.role}")
        expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")
        expect(nav.locator('[aria-current="page"]')).to_have_count(1)
        for testid in sorted(GATED):
            expect(page.get_by_test_id(testid)).to_be_visible(
                visible=testid in OFFERED[account.role]
            )


@pytest.mark.parametrize(
    ("account", "path"),
    [(OPERATOR, "/console/"), (ADMIN, "/console/users"), (TECHNICIAN, "/console/technician")],
    ids=["queue", "users", "technician"],
)
@pytest.mark.parametrize("width", [360, 1280])
def test_pages_name_every_control_and_meet_aa_contrast(
    page: Page, server: ServerProcess, account: Account, path: str, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, server, account)
    page.goto(f"{server.base_url}{path}")
    expect(page.get_by_test_id("stream-status")).to_have_attribute("data-state", "live")
    if path == "/console/":
        expect(page.get_by_test_id("alert-row")).to_have_count(3)
    elif path == "/console/users":
        expect(page.get_by_test_id("user-row")).to_have_count(3)
    assert page.evaluate(UNNAMED) == []
    assert page.evaluate(CONTRAST) == []


def test_the_contrast_check_catches_pale_text(page: Page, server: ServerProcess) -> None:
    """The check above is only worth something if it fails on text nobody can read."""
    sign_in(page, server, OPERATOR)
    page.evaluate(
        """() => {
          const p = document.createElement('p');
          p.textContent = 'pale grey on white';
          p.style.color = '#bbbbbb';
          p.style.background = '#ffffff';
          document.querySelector('main').append(p);
        }"""
    )
    failures = page.evaluate(CONTRAST)
    assert len(failures) == 1
    assert "pale grey on white" in failures[0]


def test_the_indicator_says_when_the_live_feed_is_lost_and_when_it_is_back(
    page: Page, broker: ManagedBroker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On a page whose feed the layout opens (power), a server restart shows as down, then live."""
    with console_server(broker, tmp_path_factory.mktemp("fleet-restart"), [OPERATOR]) as proc:
        sign_in(page, proc, OPERATOR)
        page.get_by_test_id("nav-power").click()
        indicator = page.get_by_test_id("stream-status")
        expect(indicator).to_have_attribute("data-state", "live")
        expect(indicator).to_have_text("Live")
        proc.stop()
        expect(indicator).to_have_attribute("data-state", "down")
        expect(indicator).to_have_text("Reconnecting…")
        proc.start()
        expect(indicator).to_have_attribute("data-state", "live", timeout=45_000)
        expect(page.get_by_test_id("whoami")).to_have_text(f"{OPERATOR.username} · operator")
