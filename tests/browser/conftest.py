"""Fixtures of the console's browser tests: one seeded server per backend
(tests/browser/site.py), one Chromium for the test that drives it, a fresh browser context
(cookies, storage) per check.

The browser lives no longer than its test. While sync Playwright is open, its event loop is
this thread's *running* loop (Playwright marks it so between its calls,
``playwright/_impl/_greenlets.py``), so a session-wide browser broke every later test on the
same xdist worker that runs an event loop of its own — the console tests' ASGI client failed
with "Cannot run the event loop while another loop is running". A launch takes about a
second, and there is one browser test per backend. The fixture checks on the way out that no
running loop is left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.browser import chromium, need_browser
from tests.browser.site import Site, seeded_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def browser() -> Iterator[Browser]:
    need_browser()
    with chromium() as b:
        yield b
    assert asyncio._get_running_loop() is None, "Playwright left a running event loop behind"


@pytest.fixture(scope="session")
def site(new_db_url: Callable[[], str]) -> Iterator[Site]:
    """The seeded server of this backend (seeded only where the browser can run)."""
    need_browser()
    with seeded_site(new_db_url()) as s:
        yield s
