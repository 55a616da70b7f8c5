"""The console under test: a container on a fresh database and a client of the whole app
(guard included) through httpx's ASGI transport, addressed to ``localhost`` as a browser on
the machine would be."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.types import ASGIApp

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.storage.database import open_database

START = datetime(2024, 1, 1, tzinfo=UTC)
METERS: list[dict[str, Any]] = [
    {"slug": "tokens", "eventType": "tokens", "aggregation": "SUM", "valueProperty": "$.n",
     "groupBy": {"model": "$.model"}},
    {"slug": "calls", "eventType": "call", "aggregation": "COUNT"},
]  # fmt: skip
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Client:
    """A synchronous client of the ASGI app (httpx's ASGI transport on one event loop of its
    own), keeping cookies like a browser; addressed to http://localhost."""

    def __init__(self, app: ASGIApp) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        )

    @property
    def cookies(self) -> httpx.Cookies:
        return self._client.cookies

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@contextmanager
def console(db_url: str, **settings: Any) -> Iterator[tuple[Container, Client]]:
    c = Container(Settings(db_url=db_url, meters=tuple(METERS), **settings), open_database(db_url),
                  FrozenClock(START))  # fmt: skip
    c.start()
    try:
        client = Client(create_app(c))
        try:
            yield c, client
        finally:
            client.close()
    finally:
        c.close()


def csrf(client: Client, path: str = "/console/customers", **kwargs: Any) -> str:
    """The CSRF token a page's forms carry (and sets as this client's cookie)."""
    r = client.get(path, **kwargs)
    assert r.status_code == 200, r.text
    found = _CSRF.search(r.text)
    assert found is not None, "no form with a CSRF token on " + path
    return found.group(1)


def text_of(html: str) -> str:
    """The page's words, tags dropped and spaces collapsed (what the assertions read)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
