"""Debian's Chromium driven by Playwright for Python, for the console's browser tests.

The browser is the system's (``apt-get install chromium``, ``/usr/bin/chromium``; another path
with ``ALLOTMENT_CHROMIUM``): Playwright never downloads one here (no ``playwright install``).
Each launch gets a fresh profile (Playwright's ``launch`` makes a new user data directory and
removes it on close) and the flags below keep it off the network but for the page under test.

When the browser (or the ``playwright`` package) is missing, the tests **skip** with the
reason on a developer's machine, and **fail** in CI (the ``CI`` variable, or
``ALLOTMENT_BROWSER_TESTS=required``, which ``scripts/test`` sets after installing chromium):
a CI run never passes without them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.browser.site import Site

VIEWPORT = {"width": 1280, "height": 860}
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> Path:
    return Path(os.environ.get("ALLOTMENT_CHROMIUM", "/usr/bin/chromium"))


def required() -> bool:
    """Browser tests must run (CI, or scripts/test): a missing browser is a failure."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("ALLOTMENT_BROWSER_TESTS", "") == "required"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    path = chromium_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        return f"no Chromium at {path} (apt-get install -y --no-install-recommends chromium)"
    return None


def need_browser() -> None:
    """Skip (on a developer's machine) or fail (in CI) when the browser cannot run."""
    reason = missing()
    if reason is None:
        return
    if required():
        pytest.fail(f"browser tests are required here (CI) but cannot run: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium (the system's), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path()), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def fresh_page(browser: Browser, site: Site) -> Iterator[Page]:
    """A page in a browser context of its own: no cookie of another check."""
    context = browser.new_context(base_url=site.url, viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, site: Site) -> None:
    """Through the login form, as a person would: the key into a session cookie."""
    page.goto("/console/customers")
    assert "/console/login" in page.url
    page.fill("input[name=key]", site.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/customers")
