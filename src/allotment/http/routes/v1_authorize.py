"""HTTP routes: enforcement at runtime (catalog.md §6) — authorize, reservations."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment.domain.decimals import plain
from allotment.domain.enforcement import AuthorizeRequest, parse_authorize, parse_commit
from allotment.domain.errors import DomainError
from allotment.domain.timeutil import format_rfc3339, from_micros
from allotment.http.params import decode_json, is_digits
from allotment.http.problems import error_response
from allotment.http.rate_limit_fields import rate_limit_headers
from allotment.http.responses import JSON, encode, json_response
from allotment.http.routes.entitlements import compact, read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.services.enforcement import EnforcementService
from allotment.services.enforcement_views import (
    AuthorizeResult,
    Busy,
    ReadChanged,
    ReservationView,
)


def authorize_json(r: AuthorizeResult) -> dict[str, Any]:
    """The stored answer (also what an idempotency key replays) with its instant in RFC 3339."""
    out = r.to_json()
    at_us = out.pop("expires_at_us", None)
    if at_us is not None:
        out["expires_at"] = format_rfc3339(from_micros(at_us))
    return out


def reservation_json(v: ReservationView) -> dict[str, Any]:
    return compact(
        {
            "object_type": "RESERVATION",
            "id": v.id,
            "customer_reference": v.customer_reference,
            "status": v.status,
            "created_at": format_rfc3339(v.created_at),
            "expires_at": format_rfc3339(v.expires_at),
            "settled_at": time_or_none(v.settled_at),
            "items": [
                compact(
                    {
                        "feature_reference": i.feature_reference,
                        "amount": str(plain(i.amount)),
                        "expires_at": format_rfc3339(i.expires_at),
                        "committed": None if i.committed is None else str(plain(i.committed)),
                    }
                )
                for i in v.items
            ],
            "event_ids": list(v.event_ids) if v.status == "committed" else None,
        }
    )


async def authorize(request: Request) -> Response:
    req = parse_authorize(await read_json(request))
    ref = str(request.path_params["ref"])
    svc = container(request).enforcement
    result = await _inline(svc, ref, req) if svc.inline else None
    if result is None:
        result = await call(svc.authorize, ref, req)
    return _answer(result)


async def _inline(
    svc: EnforcementService, ref: str, req: AuthorizeRequest
) -> AuthorizeResult | None:
    """SQLite: the decision on the event loop (its reads are local point reads), answered once
    the group writer has committed its writes — no thread blocked per decision. A key held by
    another decision on the loop is waited for without a thread; one held by a blocking
    session (a commit or release on the pool) sends the call to the pool (``None``)."""
    loop = asyncio.get_running_loop()
    wakeups = _wakeups.get(loop)
    if wakeups is None:
        wakeups = _wakeups[loop] = _Wakeups(loop)
    while True:
        written: asyncio.Future[BaseException | None] = loop.create_future()

        def done(exc: BaseException | None, fut: asyncio.Future[Any] = written) -> None:
            wakeups.put(fut, exc)

        got = svc.authorize_inline(ref, req, written, done)
        if isinstance(got, Busy):
            if not isinstance(got.holder, asyncio.Future):
                return None
            await asyncio.shield(got.holder)  # resolves with a value, never raises
            continue
        if got.pending:
            # its own future, awaited as it is: a cancelled call cancels it, which only makes
            # the writer's completion skip it (``_settle``); the keys go back either way
            failed = await written
            if isinstance(failed, ReadChanged):
                return None  # decided from a memo that had changed: nothing written
            if failed is not None:
                raise failed
        if isinstance(got.outcome, DomainError):
            raise got.outcome
        return got.outcome


def _settle(fut: asyncio.Future[BaseException | None], exc: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(exc)


class _Wakeups:
    """The group writer's completions, handed to the event loop in one wake-up per burst:
    the writer answers a whole group in a row, and each ``call_soon_threadsafe`` is a write
    to the loop's self-pipe (a system call there, a read and a loop pass here). The first
    completion of a burst schedules the drain; the others join the list it will take."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future[BaseException | None], BaseException | None]]
        self._pending = []

    def put(self, fut: asyncio.Future[BaseException | None], exc: BaseException | None) -> None:
        """From any thread."""
        with self._lock:
            self._pending.append((fut, exc))
            if len(self._pending) > 1:
                return  # a drain is scheduled and has not taken the list yet
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed (shutdown): nobody waits any more
            pass

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for fut, exc in pending:
            _settle(fut, exc)


_wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups] = (
    weakref.WeakKeyDictionary()
)


async def commit(request: Request) -> Response:
    body = await read_json(request, allow_empty=True)
    view = await call(
        container(request).enforcement.commit, str(request.path_params["id"]), parse_commit(body)
    )
    return json_response(reservation_json(view))


async def release(request: Request) -> Response:
    view = await call(container(request).enforcement.release, str(request.path_params["id"]))
    return json_response(reservation_json(view))


async def get_reservation(request: Request) -> Response:
    view = await call(container(request).enforcement.get, str(request.path_params["id"]))
    return json_response(reservation_json(view))


AUTHORIZE_INLINE_BODY_BYTES = 16 * 1024
"""Authorize bodies up to this size may be answered by :func:`authorize_fast_path`."""


def authorize_fast_path(app: ASGIApp, svc: EnforcementService) -> ASGIApp:
    """Wrap the application so that a well-formed ``POST /v1/customers/{ref}/authorize``
    skips Starlette's routing, request object and middleware (≈ 100 µs of the event loop's
    time per request, measured as server CPU per request: docs/api/enforcement.md), decided
    on the event loop (SQLite, :attr:`EnforcementService.inline`) or on the thread pool
    (PostgreSQL, and SQLite's calls that cannot be decided inline).
    Only a body the route would accept is decided here — a declared length up to
    :data:`AUTHORIZE_INLINE_BODY_BYTES`, all of it read, JSON that :func:`parse_authorize`
    accepts — and answered as the route answers: the same 200 and headers, a denial or
    error through the app's own exception handlers (:func:`error_response`). Anything else
    goes to ``app`` with the body replayed, so every invalid request's answer stays the
    route's."""

    async def fast(scope: Scope, receive: Receive, send: Send) -> None:
        ref = _authorize_ref(scope)
        if ref is None:
            await app(scope, receive, send)
            return
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if is_digits(value) else -1
        if not 0 < length <= AUTHORIZE_INLINE_BODY_BYTES:
            await app(scope, receive, send)
            return
        body, more, gone = await _take_body(receive)
        if gone:
            return
        req = _parsed(body) if len(body) == length and not more else None
        if req is None:
            await app(scope, _Replay(body, more, receive), send)
            return
        try:
            result = await _inline(svc, ref, req) if svc.inline else None
            if result is None:
                result = await call(svc.authorize, ref, req)
        except Exception as exc:  # denials, 404, 503: the app's own mapping
            request = Request(scope, _Replay(body, more, receive))
            await (await error_response(request, exc))(scope, receive, send)
            return
        await _send_answer(result, send)

    return fast


def _authorize_ref(scope: Scope) -> str | None:
    """The ``{ref}`` of ``POST /v1/customers/{ref}/authorize`` (as Starlette's route would
    match it: one non-empty path segment), or ``None``."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    parts = str(scope["path"]).split("/")
    if len(parts) != 5 or parts[0] or parts[1] != "v1" or parts[2] != "customers":
        return None
    if parts[4] != "authorize" or not parts[3]:
        return None
    return parts[3]


PARSED_BODIES_MAX = 256
"""Bodies whose parsed request :func:`_parsed` keeps (cleared when full)."""
_parsed_bodies: dict[bytes, AuthorizeRequest] = {}


def _parsed(body: bytes) -> AuthorizeRequest | None:
    """The request, or ``None`` for any body the route refuses (it answers and words it).
    A client (the middleware, without idempotency keys) sends the same few bodies again and
    again: the requests of the last :data:`PARSED_BODIES_MAX` are kept by their bytes (a
    request is immutable and a pure function of them), parsing being ≈ 10 % of an authorize's
    CPU. Only the event loop calls this."""
    found = _parsed_bodies.get(body)
    if found is not None:
        return found
    try:
        req = parse_authorize(decode_json(body, exact=True))
    except Exception:
        return None
    if len(_parsed_bodies) >= PARSED_BODIES_MAX:
        _parsed_bodies.clear()
    _parsed_bodies[body] = req
    return req


async def _take_body(receive: Receive) -> tuple[bytes, bool, bool]:
    """Up to a little past :data:`AUTHORIZE_INLINE_BODY_BYTES` of the body: ``(bytes, more to
    come, the client went away)``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False, True
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
        if not more or size > AUTHORIZE_INLINE_BODY_BYTES:
            return b"".join(chunks), more, False


class _Replay:
    """A ``receive`` handing out the body already read first, then the rest of the stream."""

    def __init__(self, body: bytes, more: bool, receive: Receive) -> None:
        self._first: Message | None = {"type": "http.request", "body": body, "more_body": more}
        self._receive = receive

    async def __call__(self) -> Message:
        first, self._first = self._first, None
        return first if first is not None else await self._receive()


async def _send_answer(result: AuthorizeResult, send: Send) -> None:
    """:func:`_answer` as the two ASGI messages Starlette's ``Response`` would send (the same
    headers in the same order: the rate-limit fields, ``Idempotent-Replayed``, then
    ``content-length`` and ``content-type``), without building the response object."""
    body = encode(authorize_json(result))
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in rate_limit_headers(result.rate_limits).items()
    ]
    if result.replayed:
        headers.append((b"idempotent-replayed", b"true"))
    headers += ((b"content-length", str(len(body)).encode()), (b"content-type", _JSON))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_JSON = JSON.encode("latin-1")


def _answer(result: AuthorizeResult) -> Response:
    headers = rate_limit_headers(result.rate_limits)
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(authorize_json(result), headers=headers or None)


ROUTES: list[BaseRoute] = [
    Route("/v1/customers/{ref}/authorize", authorize, methods=["POST"]),
    Route("/v1/reservations/{id}", get_reservation, methods=["GET"]),
    Route("/v1/reservations/{id}/commit", commit, methods=["POST"]),
    Route("/v1/reservations/{id}/release", release, methods=["POST"]),
]
