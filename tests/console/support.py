"""The console under test: a container on a fresh database and a client of the whole app
(guard included) through httpx's ASGI transport, addressed to ``localhost`` as a browser on
the machine would be."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html import unescape
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
_ids = itertools.count()
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


def text_of(page: str) -> str:
    """The page's words, tags dropped and spaces collapsed (what the assertions read)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def ingest(client: Client, event_type: str, subject: str, at: datetime, **data: Any) -> None:
    event = {"specversion": "1.0", "id": f"e-{next(_ids)}", "source": "console-test",
             "type": event_type, "subject": subject, "time": at.isoformat(),
             "data": data}  # fmt: skip
    r = client.post(
        "/api/v1/events", json=event, headers={"content-type": "application/cloudevents+json"}
    )
    assert r.status_code == 204, r.text


def catalog(client: Client) -> dict[str, Any]:
    """A budget on the ``tokens`` meter (1 000 a month), a switch and an enum feature, a plan
    with two versions, and customer ``acme`` (subject ``acme-app``) subscribed to it."""
    ok(
        client.post(
            "/v1/features",
            json={
                "reference": "tokens",
                "name": "Tokens",
                "type": "NUMBER",
                "meter_reference": "tokens",
            },
        ),
        201,
    )
    ok(client.post("/v1/features", json={"reference": "sso", "name": "SSO", "type": "SWITCH"}), 201)
    ok(
        client.post(
            "/v1/features",
            json={
                "reference": "tier",
                "name": "Support tier",
                "type": "ENUM",
                "enum_values": ["email", "phone"],
            },
        ),
        201,
    )
    ok(
        client.post(
            "/v1/pricing-plans",
            json={
                "reference": "pro",
                "name": "Pro",
                "entitlements": [
                    {"feature_reference": "tokens", "number": "1000"},
                    {"feature_reference": "sso", "switch": False},
                    {"feature_reference": "tier", "enums": ["email"]},
                ],
            },
        ),
        201,
    )
    ok(
        client.post(
            "/v1/pricing-plans/pro/versions",
            json={
                "entitlements": [
                    {"feature_reference": "tokens", "number": "2000"},
                    {"feature_reference": "sso", "switch": True},
                ]
            },
        ),
        201,
    )
    ok(
        client.post(
            "/v1/customers",
            json={"reference": "acme", "name": "Acme Inc", "subject_keys": ["acme-app"]},
        ),
        201,
    )
    sub: dict[str, Any] = ok(
        client.post(
            "/v1/pricing-plan-subscriptions",
            json={"customer_reference": "acme", "pricing_plan_reference": "pro"},
        ),
        201,
    )
    return sub  # fmt: skip
