"""HTTP routes: meter CRUD (``/api/v1/meters``, ``/api/v1/meters/{meterIdOrSlug}``).

Meter queries, subjects and group-by values live in ``meter_queries.py``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.meters import Meter
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import decode_json, get_bool, read_body, require_json_object
from allotment.http.responses import json_response, no_content
from allotment.http.runtime import call, container
from allotment.services.meters import check_id_or_slug


def meter_json(m: Meter) -> dict[str, Any]:
    """The wire ``Meter`` (contract §3.2): unset optional fields and an empty groupBy absent."""
    out: dict[str, Any] = {"id": m.id, "slug": m.slug, "name": m.name}
    if m.description is not None:
        out["description"] = m.description
    out["aggregation"] = str(m.aggregation)
    out["eventType"] = m.event_type
    if m.value_property is not None:
        out["valueProperty"] = m.value_property
    if m.group_by:
        out["groupBy"] = dict(m.group_by)
    if m.event_from is not None:
        out["eventFrom"] = format_rfc3339(m.event_from)
    if m.metadata:
        out["metadata"] = dict(m.metadata)
    out["createdAt"] = format_rfc3339(m.created_at)
    out["updatedAt"] = format_rfc3339(m.updated_at)
    if m.deleted_at is not None:
        out["deletedAt"] = format_rfc3339(m.deleted_at)
    return out


async def list_meters(request: Request) -> Response:
    include_deleted = get_bool(request.query_params, "includeDeleted", False)
    meters = await call(container(request).meters.list, include_deleted)
    return json_response([meter_json(m) for m in meters])


async def create_meter(request: Request) -> Response:
    body = require_json_object(decode_json(await read_body(request)))
    meter = await call(container(request).meters.create, body)
    return json_response(meter_json(meter))


async def get_meter(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    meter = await call(container(request).meters.get, id_or_slug)
    return json_response(meter_json(meter))


async def update_meter(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    body = require_json_object(decode_json(await read_body(request)))
    meter = await call(container(request).meters.update, id_or_slug, body)
    return json_response(meter_json(meter))


async def delete_meter(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    await call(container(request).meters.delete, id_or_slug)
    return no_content()


ROUTES: list[BaseRoute] = [
    Route("/api/v1/meters", list_meters, methods=["GET"]),
    Route("/api/v1/meters", create_meter, methods=["POST"]),
    Route("/api/v1/meters/{meterIdOrSlug}", get_meter, methods=["GET"]),
    Route("/api/v1/meters/{meterIdOrSlug}", update_meter, methods=["PUT"]),
    Route("/api/v1/meters/{meterIdOrSlug}", delete_meter, methods=["DELETE"]),
]
