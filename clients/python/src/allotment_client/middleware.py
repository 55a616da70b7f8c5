"""ASGI middleware for Starlette / FastAPI (pure ASGI: no dependency beyond httpx).

The application passes callables that map a request to a customer and to what it needs::

    app.add_middleware(
        AllotmentMiddleware,
        client=AsyncAllotment("http://allotment:8888", api_key),
        customer=lambda r: r.headers.get("x-customer"),
        requirements=lambda r: Requirements(
            checks=[{"feature_reference": "available_models", "value": r.query.get("model")}],
            consume=[{"feature_reference": "requests_per_minute"}],
            reserve=[{"feature_reference": "monthly_token_budget", "amount": 4000}],
        ),
    )

Before the endpoint runs, one authorize call decides. A denial is answered directly with the
server's problem+json (402, 403 or 429 with ``Retry-After``, ``RateLimit-Policy`` and
``RateLimit``); the endpoint never runs. An allowed request gets the rate-limit headers on its
response, and ``request.state.allotment`` (a :class:`~allotment_client.client.Reservation`
when something was reserved) on which the endpoint reports what it used:
``request.state.allotment.use(3120)``. After the response the used amounts are committed (or
the reservation released if the endpoint raised), and ``events(request, status)`` — if given —
is ingested in the background.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from allotment_client.client import AsyncAllotment, Reservation
from allotment_client.errors import Denied

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the mapping callables see of a request."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    scope: Scope

    @classmethod
    def of(cls, scope: Scope) -> RequestInfo:
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return cls(scope.get("method", "GET"), scope.get("path", "/"), headers, query, scope)


@dataclass(frozen=True, slots=True)
class Requirements:
    checks: Sequence[Mapping[str, Any]] = ()
    consume: Sequence[Mapping[str, Any]] = ()
    reserve: Sequence[Mapping[str, Any]] = ()
    subject: str | None = None
    """The subject committed usage is recorded under (default: the customer)."""
    extra: Mapping[str, Any] = field(default_factory=dict)


class _Usage:
    """``request.state.allotment`` when nothing was reserved: usage reports are ignored."""

    id = ""

    def use(self, amount: Any, feature: str | None = None) -> None:
        return None


class AllotmentMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncAllotment,
        customer: Callable[[RequestInfo], str | None],
        requirements: Callable[[RequestInfo], Requirements | None],
        events: Callable[[RequestInfo, int], Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.customer = customer
        self.requirements = requirements
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo.of(scope)
        customer = self.customer(info)
        needs = self.requirements(info) if customer is not None else None
        if customer is None or needs is None:
            await self.app(scope, receive, send)
            return
        try:
            auth = await self.client.authorize(
                customer, checks=needs.checks, consume=needs.consume, reserve=needs.reserve
            )
        except Denied as denied:
            await _problem(send, denied)
            return
        handle: Reservation | _Usage = _Usage()
        if auth.reservation_id is not None:
            handle = Reservation(auth, [str(r["feature_reference"]) for r in needs.reserve])
        scope.setdefault("state", {})["allotment"] = handle
        extra = [(k.lower().encode(), v.encode()) for k, v in auth.headers.items()]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException:
            if isinstance(handle, Reservation):
                await self.client.release(handle.id)
            raise
        if isinstance(handle, Reservation):
            await self.client.commit(handle.id, handle.used, subject=needs.subject)
        if self.events is not None:
            events = self.events(info, status)
            if events:
                await self.client.ingest(events)


async def _problem(send: Send, denied: Denied) -> None:
    body = json.dumps(denied.problem).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    for name in ("retry-after", "ratelimit-policy", "ratelimit"):
        value = denied.headers.get(name)
        if value is not None:
            headers.append((name.encode(), value.encode()))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
