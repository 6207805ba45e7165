"""Playwright helpers for the Dagster 1.13 UI (selectors verified in the team's UI notes)."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, Playwright, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(p: Playwright) -> Browser:
    """Debian's Chromium, headless (Playwright's own browser download is not used)."""
    return p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)


def dismiss_nux(page: Page) -> None:
    """Close the "Join the Dagster community" dialog if it shows (it should not: nux.yaml)."""
    skip = page.get_by_role("button", name="Skip", exact=True)
    try:
        skip.wait_for(state="visible", timeout=2500)
    except PlaywrightTimeout:  # the dialog did not come
        return
    skip.click()


def launched_run_id(page: Page, timeout: float = 60_000) -> str:
    """The run id from the "Launched run" toast's View link (`/runs/<uuid>`)."""
    view = page.get_by_role("link", name="View", exact=True)
    view.wait_for(timeout=timeout)
    href = view.get_attribute("href") or ""
    if not href.startswith("/runs/"):
        raise AssertionError(f"unexpected View link {href!r}")
    return href.removeprefix("/runs/").split("?")[0]


def wait_run_status(page: Page, timeout: float) -> str:
    """Poll the run page's status tag until `Success` or `Failure`/`Canceled`; return it."""
    deadline = time.monotonic() + timeout
    tags = {
        name: page.get_by_text(name, exact=True).first
        for name in ("Success", "Failure", "Canceled")
    }
    while time.monotonic() < deadline:
        for name, tag in tags.items():
            if tag.is_visible():
                return name
        time.sleep(0.5)
    return "timeout"


def expect_visible_with_reloads(page: Page, locator: Locator, tries: int = 3) -> None:
    """Expect `locator` visible; between tries reload the page, as a user would click refresh.

    The Checks tab polls its data every 15 s. Once, with 2 cores overloaded (load 5), our run's
    execution had not shown up there after 30 s; a reload is what a user would do. Every try
    waits the default `expect` timeout; the last failure is raised.
    """
    for attempt in range(1, tries + 1):
        try:
            expect(locator).to_be_visible()
            return
        except AssertionError:
            if attempt == tries:
                raise
            page.reload()
