"""``authorize_fast_path`` (a well-formed ``POST /v1/customers/{ref}/authorize``
decided before Starlette's routing: on the event loop on SQLite, on the thread pool on
PostgreSQL) answers exactly like the routed app — status, content type, the rate-limit and
idempotency headers, body — for allowed calls, every denial, replays and everything it must
pass through, and leaves the same state behind."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.http.routes.v1_authorize import AUTHORIZE_INLINE_BODY_BYTES, authorize_fast_path
from allotment.storage.database import open_database

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
PATH = "/v1/customers/acme/authorize"
OK = {
    "checks": [{"feature_reference": "models", "value": "small"}],
    "consume": [{"feature_reference": "rpm"}],
    "reserve": [{"feature_reference": "tokens", "amount": "100", "ttl_seconds": 60}],
}
CASES: list[tuple[str, str, bytes]] = [
    ("allowed", PATH, json.dumps(OK).encode()),
    ("allowed with a key", PATH, json.dumps({**OK, "idempotency_key": "k1"}).encode()),
    ("replayed", PATH, json.dumps({**OK, "idempotency_key": "k1"}).encode()),
    ("key reused (409)", PATH, json.dumps({"idempotency_key": "k1"}).encode()),
    ("value not in the plan (403)", PATH,
     json.dumps({"checks": [{"feature_reference": "models", "value": "large"}]}).encode()),
    ("switch off (403)", PATH, json.dumps({"checks": [{"feature_reference": "prio"}]}).encode()),
    ("not entitled (403)", PATH, json.dumps({"checks": [{"feature_reference": "nope"}]}).encode()),
    ("the last request of the window", PATH, json.dumps({"consume": OK["consume"]}).encode()),
    ("rate limited (429)", PATH, json.dumps({"consume": OK["consume"]}).encode()),
    ("budget exhausted (402)", PATH,
     json.dumps({"reserve": [{"feature_reference": "tokens", "amount": 801}]}).encode()),
    ("the rest of the budget", PATH,
     json.dumps({"reserve": [{"feature_reference": "tokens", "amount": 800}]}).encode()),
    ("denied with a key, then replayed", PATH,
     json.dumps({"consume": OK["consume"], "idempotency_key": "k2"}).encode()),
    ("the denial replayed", PATH,
     json.dumps({"consume": OK["consume"], "idempotency_key": "k2"}).encode()),
    ("unknown customer (404)", "/v1/customers/nobody/authorize", json.dumps(OK).encode()),
    ("invalid JSON", PATH, b'{"checks": '),
    ("empty body", PATH, b""),
    ("not an object", PATH, b"[]"),
    ("unknown field", PATH, json.dumps({"extra": 1}).encode()),
    ("bad amount", PATH,
     json.dumps({"consume": [{"feature_reference": "rpm", "amount": 0}]}).encode()),
    ("past the inline size", PATH,
     json.dumps(OK).encode() + b" " * AUTHORIZE_INLINE_BODY_BYTES),
    ("a longer path", PATH + "/x", json.dumps(OK).encode()),
]  # fmt: skip
ROUTED = {
    "invalid JSON",
    "empty body",
    "not an object",
    "unknown field",
    "bad amount",
    "past the inline size",
    "a longer path",
}
"""The cases the fast path hands to the routed app; it decides every other one itself."""


async def _setup(c: httpx.AsyncClient) -> None:
    async def ok(path: str, body: dict[str, Any]) -> None:
        r = await c.post(path, json=body)
        assert r.status_code in (200, 201), r.text

    await ok("/api/v1/meters", {"slug": "tok", "aggregation": "SUM", "eventType": "tok",
                                "valueProperty": "$.tokens"})  # fmt: skip
    await ok("/v1/features", {"reference": "rpm", "name": "r", "type": "NUMBER",
                              "rate_window": "MINUTE"})  # fmt: skip
    await ok("/v1/features", {"reference": "tokens", "name": "t", "type": "NUMBER",
                              "meter_reference": "tok"})  # fmt: skip
    await ok("/v1/features", {"reference": "models", "name": "m", "type": "ENUM",
                              "enum_values": ["small", "large"]})  # fmt: skip
    await ok("/v1/features", {"reference": "prio", "name": "p", "type": "SWITCH"})
    await ok("/v1/features", {"reference": "nope", "name": "n", "type": "SWITCH"})
    for ref, models, prio in (("starter", ["small"], False), ("pro", ["small", "large"], True)):
        await ok("/v1/pricing-plans", {"reference": ref, "name": ref, "entitlements": [
            {"feature_reference": "rpm", "number": "3"},
            {"feature_reference": "tokens", "number": "1000"},
            {"feature_reference": "models", "enums": models},
            {"feature_reference": "prio", "switch": prio},
        ]})  # fmt: skip
    await ok("/v1/customers", {"reference": "acme", "name": "Acme"})
    await ok("/v1/pricing-plan-subscriptions",
             {"customer_reference": "acme", "pricing_plan_reference": "starter"})  # fmt: skip


_ID = re.compile(rb'"(reservation_id|id)":"[0-9A-Z]{26}"')
_HEADERS = ("content-type", "content-length", "retry-after", "ratelimit", "ratelimit-policy",
            "idempotent-replayed")  # fmt: skip


async def _run(app: Any) -> list[Any]:
    out: list[Any] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await _setup(c)
        for name, path, body in CASES:
            r = await c.post(
                path, content=body, headers={"content-type": "application/json", "x-case": name}
            )
            headers = {h: r.headers.get(h) for h in _HEADERS}
            out.append((name, r.status_code, headers, _ID.sub(rb'"\1":"ULID"', r.content)))
        state = await c.get("/v1/customers/acme/entitlements")
        out.append(("state", state.status_code, {}, state.content))
    return out


class _Recorder:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        case = dict(scope.get("headers", [])).get(b"x-case")
        if case is not None:
            self.reached.append(case.decode())
        await self.app(scope, receive, send)


@pytest.fixture
def containers(new_db_url: Callable[[], str]) -> Iterator[list[Container]]:
    made = []
    for _ in range(2):
        url = new_db_url()
        c = Container(Settings(db_url=url), open_database(url), FrozenClock(T0))
        c.start()
        made.append(c)
    try:
        yield made
    finally:
        for c in made:
            c.close()


def test_fast_path_answers_exactly_like_the_route(containers: list[Container]) -> None:
    fast_c, routed_c = containers
    inner = _Recorder(create_app(fast_c, fast_paths=False))
    fast = authorize_fast_path(inner, fast_c.enforcement)
    got = asyncio.run(_run(fast))
    want = asyncio.run(_run(create_app(routed_c, fast_paths=False)))
    for g, w in zip(got, want, strict=True):
        assert g == w, g[0]
    statuses = {g[0]: g[1] for g in got}
    assert statuses["allowed"] == 200
    assert statuses["rate limited (429)"] == 429
    assert statuses["budget exhausted (402)"] == 402
    assert statuses["the rest of the budget"] == 200
    assert statuses["the denial replayed"] == 429
    assert dict((g[0], g[2]) for g in got)["replayed"]["idempotent-replayed"] == "true"
    assert [r for r in inner.reached if r in dict((n, 1) for n, _, _ in CASES)] == [
        n for n, _, _ in CASES if n in ROUTED
    ]
