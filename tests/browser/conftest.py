"""Fixtures of the console's browser tests: one Chromium per session, one seeded server per
backend (tests/browser/site.py), a fresh browser context (cookies, storage) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.browser import chromium, need_browser
from tests.browser.site import Site, seeded_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    need_browser()
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def site(browser: Browser, new_db_url: Callable[[], str]) -> Iterator[Site]:
    """The seeded server of this backend (shared by the tests: they change only what they
    own, e.g. one customer's override)."""
    with seeded_site(new_db_url()) as s:
        yield s


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A page in a context of its own: no cookie of another test."""
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


@pytest.fixture
def operator(page: Page, site: Site) -> Page:
    log_in(page, site)
    return page
