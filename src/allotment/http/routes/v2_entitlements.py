"""HTTP routes: OpenMeter's ``/api/v2`` customer entitlements, grants, value, history, reset,
override and delete, and the global ``/api/v2/entitlements`` and ``/api/v2/grants``
(``customers-contract.md`` §1.3). Every customer route resolves the customer first (404
unknown, 412 deleted), then the entitlement by id or feature key. Lists are always the page
envelope; sending only ``limit``/``offset`` pages by offset (then ``page``/``pageSize`` are 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.entitlement_inputs import Paging, make_paging, parse_reset
from allotment.domain.entitlement_inputs_v2 import (
    parse_entitlement_create_v2,
    parse_grant_create_v2,
)
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import InvalidInput, NotFound
from allotment.domain.ids import is_ulid
from allotment.domain.owners import Owner
from allotment.http.params import get_bool, get_int, get_list, get_str, get_time
from allotment.http.responses import json_response, no_content, num
from allotment.http.routes.customers import live_customer
from allotment.http.routes.entitlements import (
    compact,
    entitlement_json,
    entitlement_types,
    history_json,
    history_params,
    read_json,
    reserved_json,
    value_json,
)
from allotment.http.routes.grants import grant_json
from allotment.http.runtime import call, container
from allotment.services.entitlements import EntitlementView
from allotment.storage.grants_repo import GrantRecord

_V1_ONLY = ("subjectKey", "isUnlimited")


# ---------------------------------------------------------------- wire forms


def entitlement_v2_json(v: EntitlementView, customer_key: str | None) -> dict[str, Any]:
    """``EntitlementV2``: v1's entitlement without ``subjectKey``, with ``customerId``,
    ``customerKey`` and, when an allowance is issued, ``issue``."""
    out = {k: x for k, x in entitlement_json(v).items() if k not in _V1_ONLY}
    r = v.record
    out["customerId"] = r.customer_id
    if customer_key is not None:
        out["customerKey"] = customer_key
    if r.issue_after_reset is not None:
        out["issue"] = compact(
            {"amount": num(r.issue_after_reset), "priority": r.issue_after_reset_priority}
        )
    return out


def value_v2_json(v: ValueView) -> dict[str, Any]:
    out = value_json(v)
    if v.metered is not None:
        out["grantBalances"] = {k: num(b) for k, b in v.metered.grant_balances.items()}
    return out


def grant_v2_json(g: GrantRecord, now: datetime) -> dict[str, Any]:
    """``EntitlementGrantV2``: v1's grant without ``subjectKey``; ``expiration`` and
    ``expiresAt`` are absent for a grant that never expires (v1 shows 100 years)."""
    out = grant_json(g, now)
    del out["subjectKey"]
    if g.expires_at is None:
        del out["expiration"], out["expiresAt"]
    return out


# ---------------------------------------------------------------- paging


def v2_paging(q: QueryParams, order_fields: tuple[str, ...], default_order_by: str) -> Paging:
    """Page paging by default (1 / 100); offset paging when only ``limit``/``offset`` came."""
    page, size = get_int(q, "page", None), get_int(q, "pageSize", None)
    limit, offset = get_int(q, "limit", None), get_int(q, "offset", None)
    by_offset = page is None and size is None and (limit is not None or offset is not None)
    if by_offset:
        p = make_paging(None, None, limit or limits.PAGE_SIZE_DEFAULT, offset, get_str(q, "order"),
                        get_str(q, "orderBy"), order_fields, default_order_by)  # fmt: skip
        return Paging(True, 0, 0, p.limit, p.offset, p.descending, p.order_by)
    return make_paging(page or 1, size or limits.PAGE_SIZE_DEFAULT, None, None,
                       get_str(q, "order"), get_str(q, "orderBy"), order_fields,
                       default_order_by)  # fmt: skip


def envelope(items: Sequence[Any], total: int, paging: Paging) -> Response:
    return json_response(
        {"totalCount": total, "page": paging.page, "pageSize": paging.page_size,
         "items": list(items)}
    )  # fmt: skip


# ---------------------------------------------------------------- customer entitlements


def _e(request: Request) -> str:
    return str(request.path_params["entitlementIdOrFeatureKey"])


async def create_entitlement(request: Request) -> Response:
    inp, grants = parse_entitlement_create_v2(await read_json(request))
    customer = await live_customer(request)
    view = await call(container(request).customer_entitlements.create, customer.id, inp, grants)
    return json_response(entitlement_v2_json(view, customer.key), status=201)


async def list_customer_entitlements(request: Request) -> Response:
    q = request.query_params
    include_deleted = get_bool(q, "includeDeleted", False)
    paging = v2_paging(q, ("createdAt", "updatedAt"), "createdAt")
    customer = await live_customer(request)
    views = await call(
        container(request).entitlements.list_for_owner, Owner.customer(customer.id),
        include_deleted,
    )  # fmt: skip
    field = "created_at" if paging.order_by == "createdAt" else "updated_at"
    views.sort(key=lambda v: (getattr(v.record, field), v.record.id), reverse=paging.descending)
    page = views[paging.offset : paging.offset + paging.limit]
    return envelope([entitlement_v2_json(v, customer.key) for v in page], len(views), paging)


async def get_customer_entitlement(request: Request) -> Response:
    customer = await live_customer(request)
    view = await call(container(request).entitlements.get, Owner.customer(customer.id),
                      _e(request))  # fmt: skip
    return json_response(entitlement_v2_json(view, customer.key))


async def delete_customer_entitlement(request: Request) -> Response:
    customer = await live_customer(request)
    await call(container(request).entitlements.delete, Owner.customer(customer.id), _e(request))
    return no_content()


async def override_customer_entitlement(request: Request) -> Response:
    inp, grants = parse_entitlement_create_v2(await read_json(request))
    if grants:
        raise InvalidInput("grants: not supported on an override", field="grants")
    customer = await live_customer(request)
    view = await call(container(request).entitlements.override, Owner.customer(customer.id),
                      _e(request), inp)  # fmt: skip
    return json_response(entitlement_v2_json(view, customer.key), status=201)


async def create_customer_grant(request: Request) -> Response:
    inp = parse_grant_create_v2(await read_json(request))
    customer = await live_customer(request)
    grant = await call(container(request).grants.create, Owner.customer(customer.id),
                       _e(request), inp)  # fmt: skip
    return json_response(grant_v2_json(grant, _now(request)), status=201)


_GRANT_ORDER = ("id", "createdAt", "updatedAt", "effectiveAt")


def _grant_sort_key(order_by: str) -> Any:
    column = {"id": "id", "createdAt": "created_at", "updatedAt": "updated_at",
              "effectiveAt": "effective_at"}[order_by]  # fmt: skip
    return lambda g: (getattr(g, column), g.id)


async def list_customer_grants(request: Request) -> Response:
    q = request.query_params
    paging = v2_paging(q, _GRANT_ORDER, "createdAt")
    include_deleted = get_bool(q, "includeDeleted", False)
    customer = await live_customer(request)
    grants = await call(container(request).grants.list_for_entitlement,
                        Owner.customer(customer.id), _e(request), include_deleted)  # fmt: skip
    grants.sort(key=_grant_sort_key(paging.order_by), reverse=paging.descending)
    page = grants[paging.offset : paging.offset + paging.limit]
    now = _now(request)
    return envelope([grant_v2_json(g, now) for g in page], len(grants), paging)


async def customer_entitlement_value(request: Request) -> Response:
    at = get_time(request.query_params, "time")
    customer = await live_customer(request)
    owner = Owner.customer(customer.id)
    try:
        value = await call(container(request).entitlements.value, owner, _e(request), at)
    except NotFound:
        value = ValueView(False)
    out = value_v2_json(value)
    key = _e(request)
    if "balance" in out and is_ulid(key):  # reservations are held per feature key
        key = (await call(container(request).entitlements.get, owner, key)).record.feature_key
    return json_response(await reserved_json(request, out, customer.id, key))


async def customer_entitlement_history(request: Request) -> Response:
    params = history_params(request.query_params)
    customer = await live_customer(request)
    result = await call(
        container(request).entitlements.history, Owner.customer(customer.id), _e(request),
        *params,
    )  # fmt: skip
    return json_response(history_json(result))


async def reset_customer_entitlement(request: Request) -> Response:
    inp = parse_reset(await read_json(request, allow_empty=True))
    customer = await live_customer(request)
    await call(container(request).entitlements.reset, Owner.customer(customer.id), _e(request),
               inp)  # fmt: skip
    return no_content()


# ---------------------------------------------------------------- global lists


async def list_entitlements(request: Request) -> Response:
    q = request.query_params
    types = entitlement_types(q)
    paging = v2_paging(q, ("createdAt", "updatedAt"), "createdAt")
    c = container(request)
    ids = get_list(q, "customerIds")
    keys = get_list(q, "customerKeys")
    if keys:
        ids = sorted(set(ids) | set(await call(c.customers.live_ids_by_keys, keys)))
        if not ids:
            return envelope([], 0, paging)
    views, total = await call(
        c.entitlements.list_all, get_list(q, "feature"), [], types,
        get_bool(q, "excludeInactive", False), paging, ids,
    )  # fmt: skip
    customer_keys = await call(c.customers.keys_of, [v.record.customer_id for v in views])
    items = [entitlement_v2_json(v, customer_keys.get(v.record.customer_id)) for v in views]
    return envelope(items, total, paging)


async def get_entitlement(request: Request) -> Response:
    entitlement_id = str(request.path_params["entitlementId"])
    c = container(request)
    if not is_ulid(entitlement_id):
        raise NotFound(f"entitlement {entitlement_id!r} not found", field="entitlementId")
    view = await call(c.entitlements.get_by_id, entitlement_id)
    if not view.record.customer_id:
        raise NotFound(f"entitlement {entitlement_id!r} not found", field="entitlementId")
    keys = await call(c.customers.keys_of, [view.record.customer_id])
    return json_response(entitlement_v2_json(view, keys.get(view.record.customer_id)))


async def list_grants(request: Request) -> Response:
    """``customer[]`` takes ids or keys: an unknown one is 404, a deleted one is skipped."""
    q = request.query_params
    paging = v2_paging(q, _GRANT_ORDER, "createdAt")
    c = container(request)
    ids: list[str] = []
    for one in get_list(q, "customer"):
        customer = await call(c.customers.get, one)
        if customer.deleted_at is None:
            ids.append(customer.id)
    if get_list(q, "customer") and not ids:
        return envelope([], 0, paging)
    grants, total = await call(
        c.grants.list_all, get_list(q, "feature"), [], get_bool(q, "includeDeleted", False),
        paging, ids,
    )  # fmt: skip
    now = _now(request)
    return envelope([grant_v2_json(g, now) for g in grants], total, paging)


def _now(request: Request) -> datetime:
    return container(request).clock.now()


_CE = "/api/v2/customers/{customerIdOrKey}/entitlements"
_ONE = _CE + "/{entitlementIdOrFeatureKey}"

ROUTES: list[BaseRoute] = [
    Route(_CE, create_entitlement, methods=["POST"]),
    Route(_CE, list_customer_entitlements, methods=["GET"]),
    Route(_ONE, get_customer_entitlement, methods=["GET"]),
    Route(_ONE, delete_customer_entitlement, methods=["DELETE"]),
    Route(_ONE + "/override", override_customer_entitlement, methods=["PUT"]),
    Route(_ONE + "/grants", create_customer_grant, methods=["POST"]),
    Route(_ONE + "/grants", list_customer_grants, methods=["GET"]),
    Route(_ONE + "/value", customer_entitlement_value, methods=["GET"]),
    Route(_ONE + "/history", customer_entitlement_history, methods=["GET"]),
    Route(_ONE + "/reset", reset_customer_entitlement, methods=["POST"]),
    Route("/api/v2/entitlements", list_entitlements, methods=["GET"]),
    Route("/api/v2/entitlements/{entitlementId}", get_entitlement, methods=["GET"]),
    Route("/api/v2/grants", list_grants, methods=["GET"]),
]
