"""``ingest_fast_path`` (the wrapper that answers small valid ``POST /api/v1/events`` without
Starlette's routing) answers exactly like the routed app — status, content type, headers
that matter and body — for valid bodies and for everything it must pass through, stores the
same events, and answers a failed commit through the app's own error mapping, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.errors import Unavailable
from allotment.http.app import create_app
from allotment.http.routes.events import ingest_fast_path
from allotment.storage.database import open_database

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
BODY_MAX = 1024  # a small configured body limit, to test the fast path's bound at N and N+1
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def _event(i: int, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"e{i}",
        "source": "fast",
        "type": "tokens",
        "subject": "s1",
        "time": "2025-05-01T11:59:00.250Z",
        "data": {"tokens": i, "model": "m"},
    }
    event.update(extra)
    return {k: v for k, v in event.items() if v is not None}  # time=None: no time at all


def _sized(total: int) -> bytes:
    """A valid single-event body of exactly ``total`` bytes (padding in ``data``)."""
    base = _event(900, data={"tokens": 1, "pad": ""})
    bare = len(json.dumps(base).encode())
    base["data"]["pad"] = "x" * (total - bare)
    body = json.dumps(base).encode()
    assert len(body) == total
    return body


REQUESTS: list[tuple[str, str | None, bytes]] = [
    ("single", SINGLE, json.dumps(_event(1)).encode()),
    ("the same again (deduplicated)", SINGLE, json.dumps(_event(1)).encode()),
    ("batch", BATCH, json.dumps([_event(2), _event(3), _event(4)]).encode()),
    ("application/json object", "application/json", json.dumps(_event(5)).encode()),
    ("application/json array", "application/json", json.dumps([_event(6)]).encode()),
    ("no time: the server's", SINGLE, json.dumps(_event(7, time=None)).encode()),
    ("content type with a parameter", SINGLE + "; charset=utf-8", json.dumps(_event(8)).encode()),
    ("invalid JSON", SINGLE, b'{"specversion": '),
    ("empty body", SINGLE, b""),
    ("missing id", SINGLE, json.dumps({k: v for k, v in _event(9).items() if k != "id"}).encode()),
    ("array as a single event", SINGLE, json.dumps([_event(10)]).encode()),
    ("object as a batch", BATCH, json.dumps(_event(11)).encode()),
    ("one bad event in a batch", BATCH, json.dumps([_event(12), _event(13, time="x")]).encode()),
    ("bad specversion", SINGLE, json.dumps(_event(14, specversion="0.3")).encode()),
    ("unknown content type", "text/plain", json.dumps(_event(15)).encode()),
    ("no content type", None, json.dumps(_event(16)).encode()),
    ("at the body limit", SINGLE, _sized(BODY_MAX)),
    ("one byte past the body limit", SINGLE, _sized(BODY_MAX + 1)),
]
FAST = {
    "single",
    "the same again (deduplicated)",
    "batch",
    "application/json object",
    "application/json array",
    "no time: the server's",
    "at the body limit",
}
"""The requests the fast path answers itself; every other one reaches the routed app."""


@pytest.fixture
def containers(new_db_url: Callable[[], str]) -> Iterator[tuple[Container, Container]]:
    clock = FrozenClock(T0)
    made = []
    for _ in range(2):
        url = new_db_url()
        c = Container(Settings(db_url=url, max_body_bytes=BODY_MAX), open_database(url), clock)
        c.start()
        made.append(c)
    try:
        yield made[0], made[1]
    finally:
        for c in made:
            c.close()


class _Recorder:
    """The routed app, recording which request bodies reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.reached.append(dict(scope["headers"]).get(b"x-case", b"").decode())
        await self.app(scope, receive, send)


async def _send_all(app: Any) -> list[tuple[int, str, str, bytes]]:
    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for name, ctype, body in REQUESTS:
            headers = {"x-case": name}
            if ctype is not None:
                headers["content-type"] = ctype
            r = await client.post("/api/v1/events", content=body, headers=headers)
            out.append(
                (
                    r.status_code,
                    r.headers.get("content-type", ""),
                    r.headers.get("content-length", ""),
                    r.content,
                )
            )
        listed = await client.get("/api/v1/events", params={"limit": "100"})
        out.append((listed.status_code, "", "", listed.content))
    return out


def test_fast_path_answers_and_stores_exactly_like_the_route(
    containers: tuple[Container, Container],
) -> None:
    fast_c, routed_c = containers
    inner = _Recorder(create_app(fast_c, fast_paths=False))
    fast = ingest_fast_path(inner, fast_c)
    routed = create_app(routed_c, fast_paths=False)
    got = asyncio.run(_send_all(fast))
    want = asyncio.run(_send_all(routed))
    for (name, _, _), g, w in zip(REQUESTS, got, want, strict=False):
        assert g == w, name
    assert got[-1] == want[-1]  # the stored events, listed: identical
    stored = json.loads(got[-1][3])
    ids = sorted(e["event"]["id"] for e in stored)
    assert ids == [f"e{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 900)]
    assert [s for s, _, _ in REQUESTS if s not in FAST] == [r for r in inner.reached if r]
    statuses = dict(zip([n for n, _, _ in REQUESTS], [g[0] for g in got], strict=False))
    assert statuses["at the body limit"] == 204
    assert statuses["one byte past the body limit"] == 413
    assert statuses["invalid JSON"] == 400


@pytest.mark.parametrize(
    ("error", "status"),
    [(Unavailable("database unavailable: test"), 503), (RuntimeError("boom"), 500)],
)
def test_a_failed_commit_is_answered_by_the_error_mapping_once(
    containers: tuple[Container, Container],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    c, _ = containers
    calls = []

    def failing_submit(events: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
        calls.append(len(events))
        future: asyncio.Future[int] = loop.create_future()
        future.set_exception(error)
        return future

    monkeypatch.setattr(c.events.committer, "submit_to_loop", failing_submit)
    app = create_app(c)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.post(
                "/api/v1/events", content=json.dumps(_event(1)), headers={"content-type": SINGLE}
            )

    r = asyncio.run(post())
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status
    assert calls == [1]  # answered, not retried through the route
    if status == 503:
        assert r.headers["retry-after"] == "1"
        assert "database unavailable" in r.json()["detail"]
