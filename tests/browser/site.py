"""A seeded ``allotment serve`` for the browser: an admin key, the seed's data, portal tokens
and a webhook receiver, on the test clock (tests/browser/seed.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.browser.seed import NOW, REQUESTS, TOKENS, TRIAL_SUBJECT, Seeded, seed
from tests.support import ServerProcess, frozen_container


@dataclass
class Site:
    server: ServerProcess
    admin_key: str
    seeded: Seeded
    tokens: dict[str, str] = field(default_factory=dict)
    """Portal tokens by who they are for: ``acme`` (the customer's key, both meters),
    ``initech`` (tokens_total only) and ``trial`` (a subject that is no customer)."""

    @property
    def url(self) -> str:
        return self.server.url

    def api(self) -> httpx.Client:
        """A client of the JSON API with the admin key."""
        return httpx.Client(
            base_url=self.server.url, timeout=30.0, headers={"X-API-KEY": self.admin_key}
        )


class _Receiver(BaseHTTPRequestHandler):
    """Answers every webhook 204 (the deliveries then show as successful)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/allotment"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _token(c: httpx.Client, subject: str, meters: list[str] | None) -> str:
    body: dict[str, Any] = {"subject": subject, "expiresAt": "2026-12-31T00:00:00Z"}
    if meters is not None:
        body["allowedMeterSlugs"] = meters
    r = c.post("/api/v1/portal/tokens", json=body)
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


@contextlib.contextmanager
def seeded_site(db_url: str) -> Iterator[Site]:
    """A server on ``db_url`` (fresh) with an admin key and the seed, stopped afterwards."""
    with frozen_container(db_url, NOW) as c:
        _, admin = c.api_keys.create("console-admin", "admin")
    env = {
        "ALLOTMENT_TEST_CLOCK": NOW.isoformat().replace("+00:00", "Z"),
        "ALLOTMENT_WEBHOOK_ALLOW_PRIVATE": "1",
    }
    with receiver() as hook_url:
        server = ServerProcess(db_url, env=env).start()
        try:
            site = Site(server, admin, Seeded())
            with site.api() as api:
                site.seeded = seed(api, hook_url)
                site.tokens = {
                    "acme": _token(api, "acme", None),
                    "initech": _token(api, "initech", [TOKENS]),
                    "trial": _token(api, TRIAL_SUBJECT, [TOKENS, REQUESTS]),
                }
            yield site
        finally:
            server.stop()
