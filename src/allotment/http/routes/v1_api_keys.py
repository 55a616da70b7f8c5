"""HTTP routes: ``/v1/api-keys`` — issue, list, show and revoke API keys (admin keys only).

See docs/security.md. The secret is in the answer to POST only; it is never stored or shown
again (the audit trail records the answer with the secret redacted).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.api_keys import ApiKey
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import decode_json, get_int, get_str, read_body, require_json_object
from allotment.http.responses import json_response
from allotment.http.runtime import call, container


def key_json(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object_type": "api_key",
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "prefix": key.prefix,
        "created_at": format_rfc3339(key.created_at),
        "last_used_at": None if key.last_used_at is None else format_rfc3339(key.last_used_at),
        "revoked_at": None if key.revoked_at is None else format_rfc3339(key.revoked_at),
    }
    if secret is not None:
        out["secret"] = secret
    return out


async def create_key(request: Request) -> Response:
    body = require_json_object(decode_json(await read_body(request)))
    key, secret = await call(
        container(request).api_keys.create, body.get("name"), body.get("scope")
    )
    return json_response(key_json(key, secret), status=201)


async def list_keys(request: Request) -> Response:
    q = request.query_params
    limit = get_int(q, "limit", 100, minimum=1, maximum=limits.API_KEYS_LIST_LIMIT_MAX) or 100
    cursor = get_str(q, "cursor")
    keys = await call(container(request).api_keys.list, limit + 1, cursor)
    page = keys[:limit]
    next_cursor = page[-1].id if len(keys) > limit else None
    return json_response({"data": [key_json(k) for k in page], "next_cursor": next_cursor})


async def get_key(request: Request) -> Response:
    key = await call(container(request).api_keys.get, request.path_params["name"])
    return json_response(key_json(key))


async def revoke_key(request: Request) -> Response:
    key = await call(container(request).api_keys.revoke, request.path_params["name"])
    return json_response(key_json(key))


ROUTES: list[BaseRoute] = [
    Route("/v1/api-keys", create_key, methods=["POST"]),
    Route("/v1/api-keys", list_keys, methods=["GET"]),
    Route("/v1/api-keys/{name}", get_key, methods=["GET"]),
    Route("/v1/api-keys/{name}", revoke_key, methods=["DELETE"]),
]
