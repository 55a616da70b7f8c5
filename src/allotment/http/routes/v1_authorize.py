"""HTTP routes: enforcement at runtime (catalog.md §6) — authorize, reservations."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.decimals import plain
from allotment.domain.enforcement import AuthorizeRequest, parse_authorize, parse_commit
from allotment.domain.errors import DomainError
from allotment.domain.timeutil import format_rfc3339, from_micros
from allotment.http.rate_limit_fields import rate_limit_headers
from allotment.http.responses import json_response
from allotment.http.routes.entitlements import compact, read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.services.enforcement import AuthorizeResult, Busy, EnforcementService
from allotment.services.enforcement_views import ReservationView


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
    headers = rate_limit_headers(result.rate_limits)
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(authorize_json(result), headers=headers or None)


async def _inline(
    svc: EnforcementService, ref: str, req: AuthorizeRequest
) -> AuthorizeResult | None:
    """SQLite: the decision on the event loop (its reads are local point reads), answered once
    the group writer has committed its writes — no thread blocked per decision. A key held by
    another decision on the loop is waited for without a thread; one held by a blocking
    session (a commit or release on the pool) sends the call to the pool (``None``)."""
    loop = asyncio.get_running_loop()
    while True:
        written: asyncio.Future[BaseException | None] = loop.create_future()

        def done(exc: BaseException | None, fut: asyncio.Future[Any] = written) -> None:
            try:
                loop.call_soon_threadsafe(_settle, fut, exc)
            except RuntimeError:  # the loop has closed (shutdown): nobody waits any more
                pass

        got = svc.authorize_inline(ref, req, written, done)
        if isinstance(got, Busy):
            if not isinstance(got.holder, asyncio.Future):
                return None
            await asyncio.shield(got.holder)  # resolves with a value, never raises
            continue
        if got.pending:
            failed = await asyncio.shield(written)
            if failed is not None:
                raise failed
        if isinstance(got.outcome, DomainError):
            raise got.outcome
        return got.outcome


def _settle(fut: asyncio.Future[BaseException | None], exc: BaseException | None) -> None:
    if not fut.done():
        fut.set_result(exc)


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


ROUTES: list[BaseRoute] = [
    Route("/v1/customers/{ref}/authorize", authorize, methods=["POST"]),
    Route("/v1/reservations/{id}", get_reservation, methods=["GET"]),
    Route("/v1/reservations/{id}/commit", commit, methods=["POST"]),
    Route("/v1/reservations/{id}/release", release, methods=["POST"]),
]
