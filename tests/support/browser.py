"""Debian's Chromium driven by Playwright: one place for how the console tests start it.

Test modules import the `browser` and `page` fixtures from here and use
`BROWSER_MARKS` as their `pytestmark`. Without Chromium the tests are skipped
with the install command — except under `make test`, which sets
NIGEHBAAN_REQUIRE_BROWSER=1 because it installs Chromium itself, so a missing
browser there is a failure, not a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, and without the background connections this machine's
# closed network would refuse by the dozen.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 15_000
_REQUIRED = os.environ.get("NIGEHBAAN_REQUIRE_BROWSER") == "1"

if _REQUIRED and not CHROMIUM.exists():
    raise RuntimeError(f"Chromium not found at {CHROMIUM}; `make test` should have installed it")

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.broker,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    ),
]
# Bounded waits for everything a page does; `expect` alone waits only 5 s.
expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no shared session storage) and page per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
