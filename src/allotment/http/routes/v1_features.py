"""HTTP routes: `/v1/features`, typed features (catalog.md §2)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.catalog import TypedFeature, parse_feature_spec
from allotment.domain.timeutil import format_rfc3339
from allotment.http.responses import json_response, no_content
from allotment.http.routes.entitlements import compact, read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.http.v1_conventions import listing, page


def feature_json(f: TypedFeature) -> dict[str, Any]:
    return compact(
        {
            "object_type": "FEATURE",
            "id": f.feature.id,
            "reference": f.reference,
            "name": f.feature.name,
            "type": f.type,
            "enum_values": list(f.enum_values) if f.enum_values is not None else None,
            "currency": f.currency,
            "meter_reference": f.meter_reference,
            "usage_period": f.usage_period,
            "rate_window": f.rate_window,
            "description": f.description,
            "created_at": format_rfc3339(f.feature.created_at),
            "updated_at": format_rfc3339(f.feature.updated_at),
            "archived_at": time_or_none(f.feature.archived_at),
        }
    )


async def create_feature(request: Request) -> Response:
    spec = parse_feature_spec(await read_json(request))
    feature = await call(container(request).catalog.create_feature, spec)
    return json_response(feature_json(feature), status=201)


async def list_features(request: Request) -> Response:
    limit, cursor = page(request.query_params)
    rows = await call(container(request).catalog.features, cursor, limit)
    return json_response(listing(rows, limit, feature_json, lambda f: f.reference))


async def get_feature(request: Request) -> Response:
    feature = await call(container(request).catalog.feature, str(request.path_params["ref"]))
    return json_response(feature_json(feature))


async def archive_feature(request: Request) -> Response:
    await call(container(request).catalog.archive_feature, str(request.path_params["ref"]))
    return no_content()


ROUTES: list[BaseRoute] = [
    Route("/v1/features", create_feature, methods=["POST"]),
    Route("/v1/features", list_features, methods=["GET"]),
    Route("/v1/features/{ref}", get_feature, methods=["GET"]),
    Route("/v1/features/{ref}", archive_feature, methods=["DELETE"]),
]
