"""Every console page has a screenshot under docs/console/ (tests/browser/screenshots.py takes
them; this check needs no browser)."""

from __future__ import annotations

from starlette.routing import Route

from allotment.http.console import console_routes
from tests.browser.screenshots import OUT, SHOTS

NOT_PAGES = {"/console", "/console/", "/console/{path:rest}"}
"""Redirects to the customers page, and the catch-all: any unknown console path's 404 page
(tests/console/test_console_access.py reads it)."""


def test_every_console_page_has_a_screenshot() -> None:
    pages = {
        r.path
        for r in console_routes()
        if isinstance(r, Route)
        and "GET" in (r.methods or ())
        and not r.path.startswith("/console/static/")
        and r.path not in NOT_PAGES
    }
    shown = {shot.route for shot in SHOTS}
    assert pages - shown == set(), "add a Shot to tests/browser/screenshots.py and run it"
    assert shown - pages == set()
    missing = [shot.name for shot in SHOTS if not (OUT / f"{shot.name}.png").is_file()]
    assert missing == [], "run: .venv/bin/python -m tests.browser.screenshots"
