"""HTTP routes: `/v1/pricing-plan-subscriptions` (catalog.md §4)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_str
from allotment.http.responses import json_response
from allotment.http.routes.entitlements import read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.http.v1_conventions import listing, page
from allotment.services.catalog_subscriptions import SubscriptionView


def subscription_json(v: SubscriptionView) -> dict[str, Any]:
    s = v.subscription
    return {
        "object_type": "PRICING_PLAN_SUBSCRIPTION",
        "id": s.id,
        "customer_reference": v.customer.key or v.customer.id,
        "pricing_plan_reference": v.plan.reference,
        "pricing_plan_version": s.plan_version,
        "status": s.status,
        "start_at": format_rfc3339(s.start_at),
        "end_at": time_or_none(s.end_at),
        "entitlements": [
            {
                "feature_reference": e.value.feature_reference,
                "type": e.value.type,
                **e.value.data,
                "source": e.source,
                "override": e.source == "OVERRIDE",
            }
            for e in v.values
        ],
        "created_at": format_rfc3339(s.created_at) if s.created_at else None,
        "updated_at": format_rfc3339(s.updated_at) if s.updated_at else None,
    }


async def create_subscription(request: Request) -> Response:
    view = await call(container(request).subscriptions.create, await read_json(request))
    return json_response(subscription_json(view), status=201)


async def list_subscriptions(request: Request) -> Response:
    q = request.query_params
    limit, cursor = page(q)
    rows = await call(
        container(request).subscriptions.list_for, get_str(q, "customer_reference"), cursor, limit
    )
    return json_response(listing(rows, limit, subscription_json, lambda v: v.subscription.id))


async def get_subscription(request: Request) -> Response:
    view = await call(container(request).subscriptions.get, str(request.path_params["id"]))
    return json_response(subscription_json(view))


async def patch_subscription(request: Request) -> Response:
    sid = str(request.path_params["id"])
    view = await call(container(request).subscriptions.patch, sid, await read_json(request))
    return json_response(subscription_json(view))


async def cancel_subscription(request: Request) -> Response:
    view = await call(container(request).subscriptions.cancel, str(request.path_params["id"]))
    return json_response(subscription_json(view))


ROUTES: list[BaseRoute] = [
    Route("/v1/pricing-plan-subscriptions", create_subscription, methods=["POST"]),
    Route("/v1/pricing-plan-subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1/pricing-plan-subscriptions/{id}", get_subscription, methods=["GET"]),
    Route("/v1/pricing-plan-subscriptions/{id}", patch_subscription, methods=["PATCH"]),
    Route("/v1/pricing-plan-subscriptions/{id}", cancel_subscription, methods=["DELETE"]),
]
