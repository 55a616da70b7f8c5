"""Fixtures of the console's browser tests: one Chromium per session, one seeded server per
backend (tests/browser/site.py), a fresh browser context (cookies, storage) per check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.browser import chromium, need_browser
from tests.browser.site import Site, seeded_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    need_browser()
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def site(browser: Browser, new_db_url: Callable[[], str]) -> Iterator[Site]:
    """The seeded server of this backend."""
    with seeded_site(new_db_url()) as s:
        yield s
