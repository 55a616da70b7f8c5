"""The audit trail's rule (docs/security.md, "Audit trail") over EVERY served route, on both
engines: the real guard with real key and audit services on a real database, in front of a
stand-in app that makes every request succeed (or fail), so each route's own body rules do
not hide a route from the check.

* every successful POST, PUT, PATCH or DELETE on an admin route, made with a key, is one
  audit event naming the key, the method, the route template, the path, the status, the
  resource before (a GET of the path, or of a POST action's parent) and the answer after;
* a failed admin change, an admin read, and the runtime traffic (ingest, authorize,
  reservations, customer entitlements: the runtime and ingest routes) are not recorded.

tests/api/test_auth.py checks the same against the real routes for a few changes (features,
keys, channels: the before/after bodies, redaction, paging)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from allotment.container import Container
from allotment.domain.api_keys import ApiKey
from allotment.http.app import all_routes
from allotment.http.auth_policy import CHANGE
from allotment.http.guard import Guard
from tests.api.auth_support import bearer
from tests.api.route_scopes import ROUTE_SCOPES, served
from tests.support import frozen_container

ADMIN_CHANGES = [(m, t) for m, t in served() if m in CHANGE and ROUTE_SCOPES[(m, t)] == "admin"]
RUNTIME_CHANGES = [
    (m, t)
    for m, t in served()
    if m in CHANGE and ROUTE_SCOPES[(m, t)] in ("runtime", "ingest", "runtime-read")
]


class StandIn:
    """Answers a GET with ``{"state": path}`` and a change with ``change_status`` and
    ``{"changed": path}`` (no body for 204)."""

    def __init__(self) -> None:
        self.change_status = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            more = bool(message.get("more_body"))
        path = scope["path"]
        if scope["method"] == "GET":
            status, body = 200, {"state": path}
        else:
            status, body = self.change_status, {"changed": path}
        raw = b"" if status == 204 else json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")] if raw else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


@pytest.fixture
def guarded(db_url: str) -> Iterator[tuple[Container, Guard, StandIn]]:
    with frozen_container(db_url, datetime(2025, 1, 1, tzinfo=UTC)) as c:
        stand_in = StandIn()
        app = Guard(stand_in, keys=c.api_keys, audit=c.audit, mode=c.settings.auth_mode,
                    routes=all_routes())  # fmt: skip
        yield c, app, stand_in


def _path(template: str, n: int) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: f"x{n}-{m.group(0)[1:-1].lower()}", template)


def _send(app: Guard, requests: list[tuple[str, str]], secret: str) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as h:
            return [
                (await h.request(method, path, json={}, headers=bearer(secret))).status_code
                for method, path in requests
            ]

    return asyncio.run(run())


def _trail(c: Container) -> dict[str, Any]:
    return {e.id: e for e in c.audit.list(1000, None)}


def _expected_before(method: str, path: str) -> dict[str, str] | None:
    if method != "POST":
        return {"state": path}
    parent = path.rsplit("/", 1)[0]
    return {"state": parent} if parent.count("/") >= 3 else None


def _answering(
    guarded: tuple[Container, Guard, StandIn], status: int
) -> tuple[Container, Guard, ApiKey, str]:
    """The guarded stand-in answering changes with ``status``, and a new admin key."""
    c, app, stand_in = guarded
    stand_in.change_status = status
    key, secret = c.api_keys.create("root", "admin")
    return c, app, key, secret


def test_the_route_lists_are_not_empty() -> None:
    assert len(ADMIN_CHANGES) > 40
    assert len(RUNTIME_CHANGES) >= 4
    assert ("POST", "/api/v1/features") in ADMIN_CHANGES
    assert ("POST", "/api/v1/events") in RUNTIME_CHANGES


@pytest.mark.parametrize("status", [200, 201, 204])
def test_every_successful_admin_change_is_one_audit_event(
    guarded: tuple[Container, Guard, StandIn], status: int
) -> None:
    c, app, key, secret = _answering(guarded, status)
    wrong = []
    for n, (method, template) in enumerate(ADMIN_CHANGES):
        path = _path(template, n)
        before = _trail(c)
        [answered] = _send(app, [(method, path)], secret)
        new = [e for i, e in _trail(c).items() if i not in before]
        if answered != status or len(new) != 1:
            wrong.append(f"{method} {template}: answered {answered}, {len(new)} audit events")
            continue
        [event] = new
        got = (event.actor, event.key_id, event.method, event.route, event.resource, event.status)
        if got != ("root", key.id, method, template, path, status):
            wrong.append(f"{method} {template}: recorded {got}")
        after = None if status == 204 else {"changed": path}
        if (event.after_json is None and after is not None) or (
            event.after_json is not None and json.loads(event.after_json) != after
        ):
            wrong.append(f"{method} {template}: after {event.after_json}")
        recorded_before = None if event.before_json is None else json.loads(event.before_json)
        if recorded_before != _expected_before(method, path):
            wrong.append(f"{method} {template}: before {event.before_json}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("status", [400, 404, 409, 415, 500])
def test_a_failed_admin_change_is_not_recorded(
    guarded: tuple[Container, Guard, StandIn], status: int
) -> None:
    c, app, _, secret = _answering(guarded, status)
    before = _trail(c)
    requests = [(m, _path(t, n)) for n, (m, t) in enumerate(ADMIN_CHANGES)]
    assert set(_send(app, requests, secret)) == {status}
    assert _trail(c).keys() == before.keys()


def test_reads_and_runtime_traffic_are_not_recorded(
    guarded: tuple[Container, Guard, StandIn],
) -> None:
    c, app, _ = guarded
    _, secret = c.api_keys.create("root", "admin")
    before = _trail(c)
    reads = [
        ("GET", _path(t, n))
        for n, (m, t) in enumerate(served())
        if m == "GET" and ROUTE_SCOPES[(m, t)] not in ("public", "portal", "console")
    ]
    runtime = [(m, _path(t, n)) for n, (m, t) in enumerate(RUNTIME_CHANGES)]
    assert set(_send(app, reads + runtime, secret)) == {200}
    assert _trail(c).keys() == before.keys()
