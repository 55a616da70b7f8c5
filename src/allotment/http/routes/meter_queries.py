"""HTTP routes: meter query (GET/POST, JSON or CSV), meter subjects, groupBy values.

Contract §3.3. Parameters are parsed and checked here (each 400 names its parameter); the
meter-specific checks (groupBy keys, filter keys) happen in the service.
"""

from __future__ import annotations

import ast
import csv
import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import nul_text
from allotment.domain.errors import InvalidInput
from allotment.domain.timeutil import format_rfc3339, parse_rfc3339
from allotment.domain.usage_series import GroupFilter, parse_advanced_filters
from allotment.domain.windows import WindowSize, parse_time_zone, parse_window_size
from allotment.http.params import (
    decode_json,
    get_deep_object,
    get_enum,
    get_list,
    get_str,
    get_time,
    read_body,
    require_json_object,
)
from allotment.http.responses import json_response
from allotment.http.runtime import call, container
from allotment.services.meter_queries import MeterQuery, MeterQueryResult
from allotment.services.meters import check_id_or_slug

CSV = "text/csv"
ADVANCED = "advancedMeterGroupByFilters"
FILTER = "filterGroupBy"

# ---------------------------------------------------------------- GET parameters


def _filters_from_query(q: QueryParams) -> tuple[tuple[GroupFilter, ...], str]:
    simple = get_deep_object(q, FILTER)
    legacy = get_str(q, FILTER)
    if legacy is not None:
        simple.update(_legacy_filter_map(legacy))
    advanced = get_str(q, ADVANCED)
    if advanced is not None and simple:
        raise InvalidInput(f"{FILTER} and {ADVANCED} cannot be used together", field=ADVANCED)
    if advanced is not None:
        try:
            raw = json.loads(advanced)
        except ValueError as exc:
            raise InvalidInput(f"{ADVANCED}: not valid JSON ({exc})", field=ADVANCED) from exc
        nul_text.check_value(raw, ADVANCED)
        return parse_advanced_filters(raw, ADVANCED), ADVANCED
    return tuple(GroupFilter(k, "$eq", (v,)) for k, v in sorted(simple.items())), FILTER


def _legacy_filter_map(text: str) -> dict[str, str]:
    """``filterGroupBy={"model": "gpt-4"}`` as one JSON (or Python-literal) value, which the
    Python SDK sends instead of deepObject keys."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidInput(f"{FILTER}: use filterGroupBy[key]=value (got {text!r})", field=FILTER)
    nul_text.check_value(value, FILTER)
    return value


def query_from_params(q: QueryParams) -> MeterQuery:
    size = get_enum(q, "windowSize", tuple(WindowSize))
    subjects = get_list(q, "subject")
    filters, filter_field = _filters_from_query(q)
    return MeterQuery(
        from_=get_time(q, "from"),
        to=get_time(q, "to"),
        window_size=None if size is None else WindowSize(size),
        time_zone=parse_time_zone(get_str(q, "windowTimeZone")),
        subjects=tuple(subjects) or None,
        group_by=tuple(get_list(q, "groupBy")),
        filters=filters,
        filter_field=filter_field,
    )


# ---------------------------------------------------------------- POST body


def _body_time(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be an RFC 3339 date-time string", field=name)
    return parse_rfc3339(value, name)


def _body_strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{name}: must be an array of strings", field=name)
    return tuple(v for v in value if v != "")


def _body_filters(body: dict[str, Any]) -> tuple[tuple[GroupFilter, ...], str]:
    simple, advanced = body.get(FILTER), body.get(ADVANCED)
    if simple and advanced:
        raise InvalidInput(f"{FILTER} and {ADVANCED} cannot be used together", field=ADVANCED)
    if advanced:
        return parse_advanced_filters(advanced, ADVANCED), ADVANCED
    if simple is None:
        return (), FILTER
    if not isinstance(simple, dict):
        raise InvalidInput(f"{FILTER}: must be an object of key -> values", field=FILTER)
    out = []
    for key, values in sorted(simple.items()):
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidInput(f"{FILTER}[{key}]: must be an array of strings", field=FILTER)
        if values:
            out.append(GroupFilter(key, "$in", tuple(values)))
    return tuple(out), FILTER


def query_from_body(body: dict[str, Any]) -> MeterQuery:
    size = body.get("windowSize")
    tz = body.get("windowTimeZone")
    subjects = _body_strings(body, "subject")
    filters, filter_field = _body_filters(body)
    return MeterQuery(
        from_=_body_time(body, "from"),
        to=_body_time(body, "to"),
        window_size=None if size is None else parse_window_size(size),
        time_zone=parse_time_zone(tz),
        subjects=subjects or None,
        group_by=_body_strings(body, "groupBy"),
        filters=filters,
        filter_field=filter_field,
    )


# ---------------------------------------------------------------- responses


def _wants_csv(request: Request) -> bool:
    for part in request.headers.get("accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media == CSV:
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    return False


def result_json(result: MeterQueryResult) -> dict[str, Any]:
    q = result.query
    out: dict[str, Any] = {}
    if q.from_ is not None:
        out["from"] = format_rfc3339(q.from_)
    if q.to is not None:
        out["to"] = format_rfc3339(q.to)
    if q.window_size is not None:
        out["windowSize"] = str(q.window_size)
    out["data"] = result.rows  # MeterQueryRow is already in the wire's shape
    return out


def _csv_time(at: datetime) -> str:
    return format_rfc3339(at.replace(microsecond=0))


def csv_value(value: int | Decimal) -> str:
    """Go's ``%f``: six decimals, formatted from the exact number (never a float)."""
    return f"{Decimal(value):.6f}"


def result_csv(result: MeterQueryResult) -> Response:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    subject_col = ["subject"] if result.by_subject else []
    writer.writerow(["window_start", "window_end", *subject_col, *result.group_by_keys, "value"])
    for r in result.rows:
        subject = [r.subject or ""] if result.by_subject else []
        groups = [r.group_by.get(k, "") for k in result.group_by_keys]
        writer.writerow(
            [
                _csv_time(r.window_start),
                _csv_time(r.window_end),
                *subject,
                *groups,
                csv_value(r.value),
            ]
        )
    return Response(
        buf.getvalue().encode(),
        headers={
            "Content-Type": CSV,
            "Content-Disposition": f"attachment; filename={result.meter.slug}.csv",
        },
    )


async def _respond(request: Request, id_or_slug: str, q: MeterQuery) -> Response:
    result = await call(container(request).meter_queries.query, id_or_slug, q)
    return result_csv(result) if _wants_csv(request) else json_response(result_json(result))


# ---------------------------------------------------------------- handlers


async def query_get(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    return await _respond(request, id_or_slug, query_from_params(request.query_params))


async def query_post(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    raw = await read_body(request)
    body = require_json_object(decode_json(raw)) if raw.strip() else {}
    return await _respond(request, id_or_slug, query_from_body(body))


async def subjects(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    q = request.query_params
    found = await call(
        container(request).meter_queries.subjects,
        id_or_slug,
        get_time(q, "from"),
        get_time(q, "to"),
    )
    return json_response(found)


async def group_by_values(request: Request) -> Response:
    id_or_slug = check_id_or_slug(request.path_params["meterIdOrSlug"])
    key = request.path_params["groupByKey"]
    q = request.query_params
    found = await call(
        container(request).meter_queries.group_by_values,
        id_or_slug,
        key,
        get_time(q, "from"),
        get_time(q, "to"),
        get_str(q, "search"),
    )
    return json_response(found)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/meters/{meterIdOrSlug}/query", query_get, methods=["GET"]),
    Route("/api/v1/meters/{meterIdOrSlug}/query", query_post, methods=["POST"]),
    Route("/api/v1/meters/{meterIdOrSlug}/subjects", subjects, methods=["GET"]),
    Route(
        "/api/v1/meters/{meterIdOrSlug}/group-by/{groupByKey}/values",
        group_by_values,
        methods=["GET"],
    ),
]
