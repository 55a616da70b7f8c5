"""The browser leaves the thread as it found it: what made the console tests fail on the
xdist worker that had run the browser test (tests/browser/conftest.py)."""

from __future__ import annotations

import asyncio

from tests.browser.browser import chromium, need_browser


def test_a_closed_browser_leaves_no_running_event_loop() -> None:
    need_browser()
    assert asyncio._get_running_loop() is None
    with chromium() as b:
        assert b.is_connected()
        # while it is open, sync Playwright's loop is marked running in this thread: an ASGI
        # client's run_until_complete here would fail
        assert asyncio._get_running_loop() is not None
    assert asyncio._get_running_loop() is None
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
