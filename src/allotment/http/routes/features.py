"""HTTP routes: features (api-contract §5)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.entitlement_inputs import parse_feature_create
from allotment.domain.features import Feature
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_bool, get_list
from allotment.http.responses import json_response, no_content
from allotment.http.routes.entitlements import (
    compact,
    list_response,
    paging_from,
    read_json,
    time_or_none,
)
from allotment.http.runtime import call, container


def feature_json(f: Feature) -> dict[str, Any]:
    return compact(
        {
            "id": f.id,
            "key": f.key,
            "name": f.name,
            "meterSlug": f.meter_slug,
            "meterGroupByFilters": dict(f.group_filters) if f.group_filters else None,
            "advancedMeterGroupByFilters": f.advanced_filters(),
            "metadata": dict(f.metadata) if f.metadata else None,
            "createdAt": format_rfc3339(f.created_at),
            "updatedAt": format_rfc3339(f.updated_at),
            "archivedAt": time_or_none(f.archived_at),
        }
    )


async def create_feature(request: Request) -> Response:
    inp = parse_feature_create(await read_json(request))
    feature = await call(container(request).features.create, inp)
    return json_response(feature_json(feature), status=201)


async def list_features(request: Request) -> Response:
    q = request.query_params
    paging = paging_from(q, ("id", "key", "name", "createdAt", "updatedAt"), "key")
    features, total = await call(
        container(request).features.list,
        get_list(q, "meterSlug"),
        get_bool(q, "includeArchived", False),
        paging,
    )
    return list_response([feature_json(f) for f in features], total, paging)


async def get_feature(request: Request) -> Response:
    feature = await call(container(request).features.get, str(request.path_params["featureId"]))
    return json_response(feature_json(feature))


async def delete_feature(request: Request) -> Response:
    await call(container(request).features.archive, str(request.path_params["featureId"]))
    return no_content()


ROUTES: list[BaseRoute] = [
    Route("/api/v1/features", create_feature, methods=["POST"]),
    Route("/api/v1/features", list_features, methods=["GET"]),
    Route("/api/v1/features/{featureId}", get_feature, methods=["GET"]),
    Route("/api/v1/features/{featureId}", delete_feature, methods=["DELETE"]),
]
