"""HTTP routes: OpenMeter's customers (``customers-contract.md`` §1.1–§1.2).

``/api/v1/customers`` create (201), list (always the page envelope), get / replace / delete
by id or key, ``/access`` and the v1 customer value route. Deleted customers are readable by
id; every other route on them is 412 (``PreconditionFailed``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.customers import Customer
from allotment.domain.entitlement_inputs import make_paging
from allotment.domain.features import validate_key
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_bool, get_int, get_str, get_time
from allotment.http.responses import json_response, no_content
from allotment.http.routes.entitlements import (
    compact,
    read_json,
    reserved_json,
    time_or_none,
    value_json,
    with_reserved,
)
from allotment.http.runtime import call, container
from allotment.storage.customers_repo import CustomerFilter

ORDER_FIELDS = ("id", "name", "createdAt")


def customer_json(c: Customer) -> dict[str, Any]:
    """``Customer``: ``usageAttribution`` is absent when the customer has no subject keys."""
    return compact(
        {
            "id": c.id,
            "name": c.name,
            "key": c.key,
            "usageAttribution": ({"subjectKeys": list(c.subject_keys)} if c.subject_keys else None),
            "primaryEmail": c.primary_email,
            "currency": c.currency,
            "billingAddress": dict(c.billing_address) if c.billing_address else None,
            "description": c.description,
            "metadata": dict(c.metadata) if c.metadata else None,
            "createdAt": format_rfc3339(c.created_at),
            "updatedAt": format_rfc3339(c.updated_at),
            "deletedAt": time_or_none(c.deleted_at),
        }
    )


def ref(request: Request) -> str:
    return str(request.path_params["customerIdOrKey"])


async def live_customer(request: Request) -> Customer:
    """The path's customer: 404 when unknown, 412 when deleted."""
    return await call(container(request).customers.get_live, ref(request))


async def create_customer(request: Request) -> Response:
    customer = await call(container(request).customers.create, await read_json(request))
    return json_response(customer_json(customer), status=201)


async def list_customers(request: Request) -> Response:
    q = request.query_params
    page = get_int(q, "page", 1, minimum=1)
    size = get_int(q, "pageSize", limits.PAGE_SIZE_DEFAULT, minimum=1,
                   maximum=limits.PAGE_SIZE_MAX)  # fmt: skip
    paging = make_paging(page, size, None, None, get_str(q, "order"), get_str(q, "orderBy"),
                         ORDER_FIELDS, "id")  # fmt: skip
    svc = container(request).customers
    ids = None
    plan_key = get_str(q, "planKey")
    if plan_key is not None:
        ids = await call(svc.ids_on_plan, plan_key)
    f = CustomerFilter(
        key=get_str(q, "key"), name=get_str(q, "name"), primary_email=get_str(q, "primaryEmail"),
        subject=get_str(q, "subject"), ids=ids,
        include_deleted=get_bool(q, "includeDeleted", False),
    )  # fmt: skip
    items, total = await call(svc.list, f, paging)
    return json_response(
        {
            "totalCount": total,
            "page": paging.page,
            "pageSize": paging.page_size,
            "items": [customer_json(c) for c in items],
        }
    )


async def get_customer(request: Request) -> Response:
    customer = await call(container(request).customers.get, ref(request))
    return json_response(customer_json(customer))


async def replace_customer(request: Request) -> Response:
    body = await read_json(request)
    customer = await call(container(request).customers.replace, ref(request), body)
    return json_response(customer_json(customer))


async def delete_customer(request: Request) -> Response:
    await call(container(request).customers.delete, ref(request))
    return no_content()


async def customer_access(request: Request) -> Response:
    customer = await live_customer(request)
    c = container(request)
    values = await call(c.customer_entitlements.access, customer.id)
    held = {}
    if any(v.metered is not None for v in values.values()):
        held = await call(c.enforcement.held, customer.id)
    return json_response(
        {"entitlements": {k: with_reserved(value_json(v), held.get(k)) for k, v in values.items()}}
    )


async def customer_value(request: Request) -> Response:
    """The v1 ``EntitlementValue`` (no ``grantBalances``); ``{"hasAccess": false}`` when the
    customer has no entitlement for the feature."""
    feature_key = validate_key(str(request.path_params["featureKey"]), "featureKey")
    at = get_time(request.query_params, "time")
    customer = await live_customer(request)
    c = container(request)
    value = await call(c.customer_entitlements.value, customer.id, feature_key, at)
    return json_response(await reserved_json(request, value_json(value), customer.id, feature_key))


_C = "/api/v1/customers"

ROUTES: list[BaseRoute] = [
    Route(_C, create_customer, methods=["POST"]),
    Route(_C, list_customers, methods=["GET"]),
    Route(_C + "/{customerIdOrKey}", get_customer, methods=["GET"]),
    Route(_C + "/{customerIdOrKey}", replace_customer, methods=["PUT"]),
    Route(_C + "/{customerIdOrKey}", delete_customer, methods=["DELETE"]),
    Route(_C + "/{customerIdOrKey}/access", customer_access, methods=["GET"]),
    Route(
        _C + "/{customerIdOrKey}/entitlements/{featureKey}/value", customer_value, methods=["GET"]
    ),
]
