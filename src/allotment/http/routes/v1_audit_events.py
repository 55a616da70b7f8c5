"""HTTP route: ``GET /v1/audit-events`` — the audit trail of admin changes, newest first."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_int, get_str
from allotment.http.responses import json_response
from allotment.http.runtime import call, container
from allotment.storage.audit_repo import AuditEvent


def event_json(e: AuditEvent) -> dict[str, Any]:
    return {
        "object_type": "audit_event",
        "id": e.id,
        "at": format_rfc3339(e.at),
        "actor": e.actor,
        "api_key_id": e.key_id,
        "method": e.method,
        "route": e.route,
        "resource": e.resource,
        "status": e.status,
        "before": None if e.before_json is None else json.loads(e.before_json),
        "after": None if e.after_json is None else json.loads(e.after_json),
    }


async def list_audit_events(request: Request) -> Response:
    q = request.query_params
    default = limits.AUDIT_LIST_LIMIT_DEFAULT
    limit = get_int(q, "limit", default, minimum=1, maximum=limits.AUDIT_LIST_LIMIT_MAX) or default
    events = await call(container(request).audit.list, limit + 1, get_str(q, "cursor"))
    page = events[:limit]
    next_cursor = page[-1].id if len(events) > limit else None
    return json_response({"data": [event_json(e) for e in page], "next_cursor": next_cursor})


ROUTES: list[BaseRoute] = [
    Route("/v1/audit-events", list_audit_events, methods=["GET"]),
]
