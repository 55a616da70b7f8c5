"""HTTP routes: grants of metered entitlements (api-contract §7)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.entitlement_inputs import parse_grant_create
from allotment.domain.periods import next_recurrence
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_bool, get_list, get_time
from allotment.http.responses import json_response, no_content, num
from allotment.http.routes.entitlements import (
    compact,
    list_response,
    paging_from,
    read_json,
    time_or_none,
    usage_period_json,
)
from allotment.http.runtime import call, container
from allotment.storage.grants_repo import GrantRecord

NO_EXPIRY_HORIZON = timedelta(days=36525)
"""``expiresAt`` is always present on the wire; a grant without an expiration (the
issueAfterReset default grant) shows ``effectiveAt`` + 100 years (OpenMeter shows now + 100y)."""


def grant_json(g: GrantRecord, now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "entitlementId": g.entitlement_id,
        "subjectKey": g.subject_key,
        "amount": num(g.amount),
        "priority": g.priority,
        "effectiveAt": format_rfc3339(g.effective_at),
        "expiresAt": format_rfc3339(g.expires_at or g.effective_at + NO_EXPIRY_HORIZON),
        "maxRolloverAmount": num(g.max_rollover),
        "minRolloverAmount": num(g.min_rollover),
        "metadata": dict(g.metadata) if g.metadata else None,
        "annotations": dict(g.annotations) if g.annotations else None,
        "createdAt": format_rfc3339(g.created_at),
        "updatedAt": format_rfc3339(g.updated_at),
        "voidedAt": time_or_none(g.voided_at),
        "deletedAt": time_or_none(g.deleted_at),
    }
    if g.expiration_duration is not None and g.expiration_count is not None:
        out["expiration"] = {"duration": g.expiration_duration, "count": g.expiration_count}
    else:
        # The SDK types `expiration` as required; OpenMeter shows a never-expiring grant as
        # 100 years, matching expiresAt above.
        out["expiration"] = {"duration": "YEAR", "count": 100}
    rec = g.recurrence()
    if rec is not None and g.recurrence_interval is not None:
        out["recurrence"] = usage_period_json(g.recurrence_interval, rec.anchor)
        out["nextRecurrence"] = format_rfc3339(next_recurrence(rec, max(now, g.effective_at)))
    return compact(out)


def _now(request: Request) -> datetime:
    return container(request).clock.now()


async def create_grant(request: Request) -> Response:
    inp = parse_grant_create(await read_json(request))
    grant = await call(
        container(request).grants.create,
        str(request.path_params["subjectIdOrKey"]),
        str(request.path_params["entitlementIdOrFeatureKey"]),
        inp,
    )
    return json_response(grant_json(grant, _now(request)), status=201)


async def list_entitlement_grants(request: Request) -> Response:
    grants = await call(
        container(request).grants.list_for_entitlement,
        str(request.path_params["subjectIdOrKey"]),
        str(request.path_params["entitlementIdOrFeatureKey"]),
        get_bool(request.query_params, "includeDeleted", False),
    )
    now = _now(request)
    return json_response([grant_json(g, now) for g in grants])


async def list_grants(request: Request) -> Response:
    q = request.query_params
    paging = paging_from(q, ("id", "createdAt", "updatedAt", "effectiveAt"), "effectiveAt")
    grants, total = await call(
        container(request).grants.list_all,
        get_list(q, "feature"),
        get_list(q, "subject"),
        get_bool(q, "includeDeleted", False),
        paging,
    )
    now = _now(request)
    return list_response([grant_json(g, now) for g in grants], total, paging)


async def void_grant(request: Request) -> Response:
    at = get_time(request.query_params, "at")
    await call(container(request).grants.void, str(request.path_params["grantId"]), at)
    return no_content()


_E = "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/grants"

ROUTES: list[BaseRoute] = [
    Route(_E, create_grant, methods=["POST"]),
    Route(_E, list_entitlement_grants, methods=["GET"]),
    Route("/api/v1/grants", list_grants, methods=["GET"]),
    Route("/api/v1/grants/{grantId}", void_grant, methods=["DELETE"]),
]
