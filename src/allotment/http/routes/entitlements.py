"""HTTP routes: entitlements per subject, the global entitlement list, value, history, reset.

Also the small wire helpers shared with the feature and grant routes: exact-number JSON
bodies, the array-or-envelope list rule (api-contract §1.7) and optional-field omission.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from allotment.domain.entitlement_inputs import (
    EntitlementType,
    Paging,
    make_paging,
    parse_entitlement_create,
    parse_reset,
)
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import InvalidInput, NotFound
from allotment.domain.periods import interval_iso, interval_to_wire, parse_interval
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import (
    decode_json,
    get_bool,
    get_int,
    get_list,
    get_str,
    get_time,
    read_body,
)
from allotment.http.responses import JSON, encode, json_response, no_content, num
from allotment.http.runtime import call, container
from allotment.services.entitlement_values import HistoryView
from allotment.services.entitlements import EntitlementService, EntitlementView

# ---------------------------------------------------------------- shared wire helpers


async def read_json(request: Request, *, allow_empty: bool = False) -> Any:
    """The JSON body with every non-integer number as an exact ``Decimal``."""
    body = await read_body(request)
    if not body.strip():
        if allow_empty:
            return {}
        raise InvalidInput("request body is empty; a JSON document is required", field="body")
    return decode_json(body, exact=True)


def time_or_none(at: datetime | None) -> str | None:
    return None if at is None else format_rfc3339(at)


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drop unset optional fields (None) — they are absent on the wire, never null."""
    return {k: v for k, v in d.items() if v is not None}


def paging_from(q: QueryParams, order_fields: tuple[str, ...], default_order_by: str) -> Paging:
    return make_paging(
        get_int(q, "page", None),
        get_int(q, "pageSize", None),
        get_int(q, "limit", None),
        get_int(q, "offset", None),
        get_str(q, "order"),
        get_str(q, "orderBy"),
        order_fields,
        default_order_by,
    )


def list_response(items: Sequence[Any], total: int, paging: Paging) -> Response:
    if paging.envelope:
        return json_response(
            {
                "pageSize": paging.page_size,
                "page": paging.page,
                "totalCount": total,
                "items": list(items),
            }
        )
    return json_response(list(items))


def usage_period_json(interval: str, anchor: datetime) -> dict[str, Any]:
    duration = parse_interval(interval)
    return {
        "interval": interval_to_wire(duration),
        "intervalISO": interval_iso(duration),
        "anchor": format_rfc3339(anchor),
    }


# ---------------------------------------------------------------- entitlement wire form


def entitlement_json(v: EntitlementView) -> dict[str, Any]:
    r = v.record
    out: dict[str, Any] = {
        "id": r.id,
        "type": r.type,
        "featureId": r.feature_id,
        "featureKey": r.feature_key,
        "subjectKey": r.subject_key,
        "metadata": dict(r.metadata) if r.metadata else None,
        "annotations": dict(r.annotations) if r.annotations else None,
        "activeFrom": format_rfc3339(r.active_from),
        "activeTo": time_or_none(r.active_to),
        "createdAt": format_rfc3339(r.created_at),
        "updatedAt": format_rfc3339(r.updated_at),
        "deletedAt": time_or_none(r.deleted_at),
    }
    if r.usage_period_interval and r.usage_period_anchor:
        out["usagePeriod"] = usage_period_json(r.usage_period_interval, r.usage_period_anchor)
    if v.current_usage_period is not None:
        out["currentUsagePeriod"] = {
            "from": format_rfc3339(v.current_usage_period.start),
            "to": format_rfc3339(v.current_usage_period.end),
        }
    if r.type == EntitlementType.METERED:
        out["isSoftLimit"] = r.is_soft_limit
        out["isUnlimited"] = False
        if r.issue_after_reset is not None:
            out["issueAfterReset"] = num(r.issue_after_reset)
            out["issueAfterResetPriority"] = r.issue_after_reset_priority
        out["preserveOverageAtReset"] = r.preserve_overage_at_reset
        out["lastReset"] = time_or_none(v.last_reset)
        out["measureUsageFrom"] = time_or_none(r.measure_usage_from)
    elif r.type == EntitlementType.STATIC:
        out["config"] = r.config
    return compact(out)


def value_json(v: ValueView) -> dict[str, Any]:
    if v.metered is not None:
        m = v.metered
        return {
            "hasAccess": m.has_access,
            "balance": num(m.balance),
            "usage": num(m.usage),
            "overage": num(m.overage),
            "totalAvailableGrantAmount": num(m.total_available_grant_amount),
        }
    return compact({"hasAccess": v.has_access, "config": v.config})


def with_reserved(out: dict[str, Any], reserved: Decimal | None) -> dict[str, Any]:
    """A metered value of a customer that holds reservations of the feature
    (docs/api/enforcement.md): ``balance`` stays the grants' balance; ``reserved`` (the held
    total) and ``availableBalance`` (balance − reserved: what a new reservation may still take)
    are added. Nothing changes while nothing is held, so OpenMeter's clients see its schema."""
    if reserved and "balance" in out:
        out["reserved"] = num(reserved)
        out["availableBalance"] = num(out["balance"] - reserved)
    return out


async def reserved_json(
    request: Request, out: dict[str, Any], customer_id: str, feature_key: str
) -> dict[str, Any]:
    """:func:`with_reserved` for a customer's value now (a value ``?time=`` in the past or
    future shows no holds: they are known only now)."""
    if "balance" not in out or "time" in request.query_params:
        return out
    held = await call(container(request).enforcement.held_of, customer_id, feature_key)
    return with_reserved(out, held)


def _in_zone(at: datetime, tz: ZoneInfo) -> str:
    if tz.key == "UTC":
        return format_rfc3339(at)
    return at.astimezone(tz).isoformat()


def history_json(h: HistoryView) -> dict[str, Any]:
    tz = h.tz
    return {
        "windowedHistory": [
            {
                "period": {"from": _in_zone(w.from_, tz), "to": _in_zone(w.to, tz)},
                "usage": num(w.usage),
                "balanceAtStart": num(w.balance_at_start),
            }
            for w in h.history.windowed
        ],
        "burndownHistory": [
            {
                "period": {"from": format_rfc3339(b.from_), "to": format_rfc3339(b.to)},
                "usage": num(b.usage),
                "overage": num(b.overage),
                "balanceAtStart": num(b.balance_at_start),
                "grantBalancesAtStart": {k: num(x) for k, x in b.grant_balances_at_start.items()},
                "balanceAtEnd": num(b.balance_at_end),
                "grantBalancesAtEnd": {k: num(x) for k, x in b.grant_balances_at_end.items()},
                "grantUsages": [
                    {"grantId": gid, "usage": num(u)} for gid, u in b.grant_usages.items()
                ],
            }
            for b in h.history.burndown
        ],
    }


# ---------------------------------------------------------------- handlers


def _p(request: Request, name: str) -> str:
    return str(request.path_params[name])


async def create_entitlement(request: Request) -> Response:
    inp = parse_entitlement_create(await read_json(request))
    svc = container(request).entitlements
    view = await call(svc.create, _p(request, "subjectIdOrKey"), inp)
    return json_response(entitlement_json(view), status=201)


async def list_subject_entitlements(request: Request) -> Response:
    include_deleted = get_bool(request.query_params, "includeDeleted", False)
    svc = container(request).entitlements
    views = await call(svc.list_for_subject, _p(request, "subjectIdOrKey"), include_deleted)
    return json_response([entitlement_json(v) for v in views])


async def get_subject_entitlement(request: Request) -> Response:
    svc = container(request).entitlements
    view = await call(svc.get, _p(request, "subjectIdOrKey"), _p(request, "entitlementId"))
    return json_response(entitlement_json(view))


async def delete_subject_entitlement(request: Request) -> Response:
    svc = container(request).entitlements
    await call(svc.delete, _p(request, "subjectIdOrKey"), _p(request, "entitlementId"))
    return no_content()


async def override_entitlement(request: Request) -> Response:
    inp = parse_entitlement_create(await read_json(request))
    svc = container(request).entitlements
    view = await call(
        svc.override, _p(request, "subjectIdOrKey"), _p(request, "entitlementIdOrFeatureKey"), inp
    )
    return json_response(entitlement_json(view), status=201)


def value_body(v: ValueView) -> bytes:
    return encode(value_json(v))


async def entitlement_value(request: Request) -> Response:
    """A cache hit on SQLite is answered on the event loop (one local point read of a few
    microseconds); anything else runs on the thread pool (docs/api/entitlements.md)."""
    at = get_time(request.query_params, "time")
    svc = container(request).entitlements
    params = request.path_params
    subject, key = str(params["subjectIdOrKey"]), str(params["entitlementIdOrFeatureKey"])
    if svc.inline_reads:
        body = svc.cached_value_body(subject, key, at, value_body)
        if body is not None:
            return Response(body, media_type=JSON)
    value = await call(svc.value, subject, key, at)
    return json_response(value_json(value))


HistoryParams = tuple[str, datetime | None, datetime | None, str | None]


def history_params(q: QueryParams) -> HistoryParams:
    """``windowSize`` (required), ``from``, ``to``, ``windowTimeZone`` of a history request."""
    window_size = get_str(q, "windowSize")
    if window_size is None:
        raise InvalidInput(
            "query parameter windowSize: required (MINUTE, HOUR, DAY or MONTH)",
            field="windowSize",
        )
    return window_size, get_time(q, "from"), get_time(q, "to"), get_str(q, "windowTimeZone")


async def entitlement_history(request: Request) -> Response:
    params = history_params(request.query_params)
    svc = container(request).entitlements
    result = await call(
        svc.history, _p(request, "subjectIdOrKey"), _p(request, "entitlementId"), *params
    )
    return json_response(history_json(result))


async def reset_entitlement(request: Request) -> Response:
    inp = parse_reset(await read_json(request, allow_empty=True))
    svc = container(request).entitlements
    await call(svc.reset, _p(request, "subjectIdOrKey"), _p(request, "entitlementId"), inp)
    return no_content()


_TYPES = tuple(t.value for t in EntitlementType)


def entitlement_types(q: QueryParams) -> list[str]:
    """The ``entitlementType`` filter, each one of metered, static, boolean."""
    types = get_list(q, "entitlementType")
    for t in types:
        if t not in _TYPES:
            raise InvalidInput(
                f"query parameter entitlementType: {t!r} is not one of {', '.join(_TYPES)}",
                field="entitlementType",
            )
    return types


async def list_entitlements(request: Request) -> Response:
    q = request.query_params
    types = entitlement_types(q)
    paging = paging_from(q, ("createdAt", "updatedAt"), "createdAt")
    svc = container(request).entitlements
    views, total = await call(
        svc.list_all, get_list(q, "feature"), get_list(q, "subject"), types,
        get_bool(q, "excludeInactive", False), paging,
    )  # fmt: skip
    return list_response([entitlement_json(v) for v in views], total, paging)


async def get_entitlement(request: Request) -> Response:
    """Subject-owned entitlements only (a customer's are served by ``/api/v2``)."""
    svc = container(request).entitlements
    entitlement_id = _p(request, "entitlementId")
    view = await call(svc.get_by_id, entitlement_id)
    if view.record.customer_id:
        raise NotFound(f"entitlement {entitlement_id!r} not found")
    return json_response(entitlement_json(view))


# ---------------------------------------------------------------- value check fast path


def value_fast_path(app: ASGIApp, svc: EntitlementService) -> ASGIApp:
    """Wrap the application so that a value check the cache answers from memory skips
    Starlette's routing (a linear scan of every route before this one, about 30 µs) and
    middleware: ``GET /api/v1/subjects/{s}/entitlements/{k}/value[?time=…]`` is answered
    here when :meth:`EntitlementService.cached_value_body` can (SQLite, cache hit), with the
    same status, headers and body the route sends. Anything else — other paths and methods,
    other query parameters, a ``time`` that does not parse, a cache miss, any error — goes
    to ``app`` untouched, so every error answer stays the route's own.
    """
    if not svc.inline_reads:
        return app

    async def fast(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            body = _fast_value(svc, scope["path"], scope["query_string"])
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return fast


def _fast_value(svc: EntitlementService, path: str, query: bytes) -> bytes | None:
    parts = path.split("/")
    if (
        len(parts) != 8
        or parts[7] != "value"
        or parts[5] != "entitlements"
        or parts[3] != "subjects"
        or parts[2] != "v1"
        or parts[1] != "api"
        or parts[0]
        or not parts[4]
        or not parts[6]
    ):
        return None
    at = None
    try:
        if query:
            q = QueryParams(query)
            if any(k != "time" for k in q):
                return None
            at = get_time(q, "time")
        return svc.cached_value_body(parts[4], parts[6], at, value_body)
    except Exception:  # the route answers (and words) every error itself
        return None


_S = "/api/v1/subjects/{subjectIdOrKey}/entitlements"

ROUTES: list[BaseRoute] = [
    Route(_S, create_entitlement, methods=["POST"]),
    Route(_S, list_subject_entitlements, methods=["GET"]),
    Route(_S + "/{entitlementId}", get_subject_entitlement, methods=["GET"]),
    Route(_S + "/{entitlementId}", delete_subject_entitlement, methods=["DELETE"]),
    Route(_S + "/{entitlementIdOrFeatureKey}/override", override_entitlement, methods=["PUT"]),
    Route(_S + "/{entitlementIdOrFeatureKey}/value", entitlement_value, methods=["GET"]),
    Route(_S + "/{entitlementId}/history", entitlement_history, methods=["GET"]),
    Route(_S + "/{entitlementId}/reset", reset_entitlement, methods=["POST"]),
    Route("/api/v1/entitlements", list_entitlements, methods=["GET"]),
    Route("/api/v1/entitlements/{entitlementId}", get_entitlement, methods=["GET"]),
]
