"""HTTP routes: `/v1/pricing-plans`, versioned plans with typed values (catalog.md §3)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.catalog import TypedValue
from allotment.domain.errors import InvalidInput
from allotment.domain.timeutil import format_rfc3339, from_micros
from allotment.http.params import get_bool, is_digits
from allotment.http.responses import json_response, no_content
from allotment.http.routes.entitlements import compact, read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.http.v1_conventions import listing, page
from allotment.services.catalog import PlanView


def value_json(v: TypedValue, **extra: Any) -> dict[str, Any]:
    return {"feature_reference": v.feature_reference, "type": v.type, **v.data, **extra}


def plan_json(view: PlanView) -> dict[str, Any]:
    p, v = view.plan, view.version
    return compact(
        {
            "object_type": "PRICING_PLAN",
            "id": p.id,
            "reference": p.reference,
            "name": p.name,
            "description": p.description,
            "version": v.version,
            "active_version": p.active_version,
            "entitlements": [value_json(x) for x in v.values],
            "versions": [
                {
                    "version": n,
                    "created_at": format_rfc3339(from_micros(at)),
                    "active": n == p.active_version,
                }
                for n, at in view.versions
            ],
            "created_at": format_rfc3339(p.created_at),
            "updated_at": format_rfc3339(p.updated_at),
            "archived_at": time_or_none(p.archived_at),
        }
    )


async def create_plan(request: Request) -> Response:
    view = await call(container(request).catalog.create_plan, await read_json(request))
    return json_response(plan_json(view), status=201)


async def add_version(request: Request) -> Response:
    ref = str(request.path_params["ref"])
    view = await call(container(request).catalog.add_version, ref, await read_json(request))
    return json_response(plan_json(view), status=201)


async def list_plans(request: Request) -> Response:
    q = request.query_params
    limit, cursor = page(q)
    rows = await call(
        container(request).catalog.plans, cursor, limit, get_bool(q, "include_archived", False)
    )
    return json_response(listing(rows, limit, plan_json, lambda v: v.plan.reference))


async def get_plan(request: Request) -> Response:
    view = await call(container(request).catalog.plan, str(request.path_params["ref"]))
    return json_response(plan_json(view))


async def get_version(request: Request) -> Response:
    raw = str(request.path_params["version"])
    if not is_digits(raw) or not 1 <= int(raw) <= limits.QUERY_INT_MAX:
        raise InvalidInput(f"version: {raw!r} is not a version number (1, 2, ...)",
                           field="version")  # fmt: skip
    view = await call(container(request).catalog.plan, str(request.path_params["ref"]), int(raw))
    return json_response(plan_json(view))


async def archive_plan(request: Request) -> Response:
    await call(container(request).catalog.archive_plan, str(request.path_params["ref"]))
    return no_content()


ROUTES: list[BaseRoute] = [
    Route("/v1/pricing-plans", create_plan, methods=["POST"]),
    Route("/v1/pricing-plans", list_plans, methods=["GET"]),
    Route("/v1/pricing-plans/{ref}", get_plan, methods=["GET"]),
    Route("/v1/pricing-plans/{ref}", archive_plan, methods=["DELETE"]),
    Route("/v1/pricing-plans/{ref}/versions", add_version, methods=["POST"]),
    Route("/v1/pricing-plans/{ref}/versions/{version}", get_version, methods=["GET"]),
]
