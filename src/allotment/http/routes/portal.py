"""HTTP routes: portal tokens and the token-authenticated portal meter query.

See docs/api/portal.md. ``/api/v1/portal/meters/*`` answers CORS preflights and carries
``Access-Control-Allow-Origin: *`` on every response, errors included, so a browser page on any
origin can read the 401 that tells it to fetch a new token.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.errors import DomainError
from allotment.domain.timeutil import format_rfc3339
from allotment.http import problems
from allotment.http.params import decode_json, get_int, read_body
from allotment.http.responses import json_response, no_content
from allotment.http.routes.meter_queries import CSV, query_from_params, result_csv, result_json
from allotment.http.runtime import call, container
from allotment.services.meters import check_id_or_slug
from allotment.services.portal import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX
from allotment.storage.portal_repo import PortalTokenRecord

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Accept, Content-Type",
    "Access-Control-Max-Age": "600",
}


def token_json(
    record: PortalTokenRecord, *, expired: bool, token: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.id,
        "subject": record.subject,
        "expiresAt": format_rfc3339(record.expires_at),
        "expired": expired,
        "createdAt": format_rfc3339(record.created_at),
    }
    if token is not None:
        out["token"] = token
    if record.allowed_meter_slugs is not None:
        out["allowedMeterSlugs"] = list(record.allowed_meter_slugs)
    if record.invalidated_at is not None:
        out["invalidatedAt"] = format_rfc3339(record.invalidated_at)
    return out


async def create_token(request: Request) -> Response:
    payload = decode_json(await read_body(request))
    issued = await call(container(request).portal.create, payload)
    return json_response(token_json(issued.record, expired=False, token=issued.token))


async def list_tokens(request: Request) -> Response:
    limit = get_int(
        request.query_params, "limit", LIST_LIMIT_DEFAULT, minimum=1, maximum=LIST_LIMIT_MAX
    )
    portal = container(request).portal
    records = await call(portal.list_tokens, limit or LIST_LIMIT_DEFAULT)
    return json_response([token_json(r, expired=portal.is_expired(r)) for r in records])


async def invalidate_tokens(request: Request) -> Response:
    body = await read_body(request)
    payload = decode_json(body) if body.strip() else {}
    await call(container(request).portal.invalidate, payload)
    return no_content()


# ---------------------------------------------------------------- portal meter query


def _wants_csv(request: Request) -> bool:
    """``Accept: text/csv`` before any JSON media range; JSON otherwise (as the meter query)."""
    for part in request.headers.get("accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media == CSV:
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return False


async def _portal_query(request: Request) -> Response:
    """Authenticate first (401 before any 400/404), then run the meter query for the token's
    subject only: a ``subject`` parameter from the caller is replaced, never merged."""
    c = container(request)
    slug = request.path_params["meterSlug"]
    record = await call(c.portal.authenticate, request.headers.get("authorization"), slug)
    check_id_or_slug(slug)
    query = replace(query_from_params(request.query_params), subjects=(record.subject,))
    result = await call(c.meter_queries.query, slug, query)
    return result_csv(result) if _wants_csv(request) else json_response(result_json(result))


async def portal_meter_query(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(b"", status_code=204, headers=CORS_HEADERS)
    try:
        response = await _portal_query(request)
    except DomainError as exc:
        # The one error table still decides the status; we only add the CORS headers.
        response = await problems.domain_error_handler(request, exc)
    response.headers.update(CORS_HEADERS)
    return response


ROUTES: list[BaseRoute] = [
    Route("/api/v1/portal/tokens", create_token, methods=["POST"]),
    Route("/api/v1/portal/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/portal/tokens/invalidate", invalidate_tokens, methods=["POST"]),
    Route(
        "/api/v1/portal/meters/{meterSlug}/query", portal_meter_query, methods=["GET", "OPTIONS"]
    ),
]
