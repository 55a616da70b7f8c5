"""Screenshots of every console page, for docs/console/*.png (shown in README.md and
docs/console.md).

    .venv/bin/python -m tests.browser.screenshots            # writes docs/console/*.png
    .venv/bin/python -m tests.browser.screenshots --out DIR  # elsewhere

Starts a seeded server on a fresh SQLite file (tests/browser/seed.py: the test clock stands at
2026-11-20 14:30 UTC, so every run draws the same numbers), logs in through the form with an
admin key, opens each page of :data:`SHOTS` in Debian's Chromium and saves it. The portal page
is opened with a customer's portal link, in a browser context without the operator's session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser.browser import VIEWPORT, chromium, log_in, missing
from tests.browser.seed import REQUESTS, TOKENS
from tests.browser.site import Site, seeded_site
from tests.support import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser

OUT = ROOT / "docs" / "console"


@dataclass(frozen=True)
class Shot:
    name: str
    """The file: ``docs/console/<name>.png``."""
    route: str
    """The console route it shows (tests/browser/test_screenshots.py checks every GET page
    has a shot)."""
    path: Callable[[Site], str]
    operator: bool = True
    """Opened with the operator's session (else with no cookie at all)."""


SHOTS: tuple[Shot, ...] = (
    Shot("login", "/console/login", lambda s: "/console/login", operator=False),
    Shot("customers", "/console/customers", lambda s: "/console/customers"),
    Shot("customer", "/console/customers/{ref}",
         lambda s: f"/console/customers/{s.seeded.customer_ids['acme']}"),
    Shot("plans", "/console/plans", lambda s: "/console/plans"),
    Shot("plan", "/console/plans/{plan}", lambda s: "/console/plans/pro"),
    Shot("meters", "/console/meters", lambda s: "/console/meters"),
    Shot("meter", "/console/meters/{slug}",
         lambda s: f"/console/meters/{TOKENS}?window=DAY&range=30d&group=model"),
    Shot("meter-hourly", "/console/meters/{slug}",
         lambda s: f"/console/meters/{REQUESTS}?window=HOUR&range=24h&group=route"),
    Shot("entitlement", "/console/entitlements/{id}",
         lambda s: f"/console/entitlements/{s.seeded.acme_tokens_entitlement}"),
    Shot("notifications", "/console/notifications", lambda s: "/console/notifications"),
    Shot("ingest", "/console/ingest", lambda s: "/console/ingest"),
    Shot("portal", "/console/portal",
         lambda s: f"/console/portal#token={s.tokens['acme']}", operator=False),
)  # fmt: skip


def settle_deliveries(site: Site, seconds: float = 15.0) -> None:
    """Wait (a little) until the seed's notifications are delivered, so the page shows their
    final state rather than ``PENDING``."""
    deadline = time.monotonic() + seconds
    with site.api() as api:
        while time.monotonic() < deadline:
            items = api.get("/api/v1/notification/events").json()["items"]
            states = {d["state"] for e in items for d in e.get("deliveryStatus", [])}
            if items and states <= {"SUCCESS", "FAILED"}:
                return
            time.sleep(0.25)


def take(browser: Browser, site: Site, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    settle_deliveries(site)
    written: list[Path] = []
    contexts = {
        flag: browser.new_context(base_url=site.url, viewport=VIEWPORT)  # type: ignore[arg-type]
        for flag in (True, False)
    }
    try:
        log_in(contexts[True].new_page(), site)
        for shot in SHOTS:
            page = contexts[shot.operator].new_page()
            response = page.goto(shot.path(site))
            if shot.name == "portal":
                page.wait_for_selector("#portal-owner")
            elif response is None or response.status != 200:
                raise RuntimeError(f"{shot.name}: {shot.path(site)} answered "
                                   f"{None if response is None else response.status}")  # fmt: skip
            target = out / f"{shot.name}.png"
            page.screenshot(path=str(target), full_page=True)
            page.close()
            written.append(target)
    finally:
        for context in contexts.values():
            context.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="directory (default docs/console)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason is not None:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 2
    db = f"sqlite:///{Path(tempfile.mkdtemp(prefix='allotment-shots-')) / 'console.sqlite'}"
    with seeded_site(db) as site, chromium() as browser:
        for path in take(browser, site, args.out):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
