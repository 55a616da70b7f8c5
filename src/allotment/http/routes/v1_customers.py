"""HTTP routes: `/v1/customers` (the OpenMeter customer, catalog.md §4), the one call
`GET /v1/customers/{ref}/entitlements` (§5) and `GET /v1/ingest/meter-data`.

A `/v1` customer IS the OpenMeter customer: ``reference`` = ``key``, ``subject_keys`` =
``usageAttribution.subjectKeys``, ``email`` = ``primaryEmail``. The rules (and conflicts) are
the customer service's; the fields are renamed in its messages.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.catalog import CatalogInvalid, validate_reference
from allotment.domain.customers import Customer, CustomerInput, parse_customer_input
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.errors import InvalidInput
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_str, is_digits
from allotment.http.responses import json_response, no_content
from allotment.http.routes.entitlements import compact, read_json, time_or_none
from allotment.http.runtime import call, container
from allotment.http.v1_conventions import dec, listing, page, require_object
from allotment.services.catalog_subscriptions import EntitledItem
from allotment.storage.customers_repo import CustomerFilter

if TYPE_CHECKING:
    from allotment.container import Container

_FIELDS = {"reference", "name", "email", "subject_keys"}
_RENAMES = (("usageAttribution.subjectKeys", "subject_keys"), ("primaryEmail", "email"),
            ("key", "reference"))  # fmt: skip


def customer_json(c: Customer) -> dict[str, Any]:
    return compact(
        {
            "object_type": "CUSTOMER",
            "id": c.id,
            "reference": c.key,
            "name": c.name,
            "email": c.primary_email,
            "subject_keys": list(c.subject_keys),
            "created_at": format_rfc3339(c.created_at),
            "updated_at": format_rfc3339(c.updated_at),
            "deleted_at": time_or_none(c.deleted_at),
        }
    )


def _renamed(exc: InvalidInput) -> CatalogInvalid:
    detail, field = exc.detail, exc.field
    for old, new in _RENAMES:
        detail = detail.replace(old, new)
        if field is not None:
            field = field.replace(old, new)
    return CatalogInvalid(detail, field=field)


def customer_input(body: Any, base: Customer | None = None) -> CustomerInput:
    body = require_object(body)
    for key in body:
        if key not in _FIELDS:
            raise CatalogInvalid(f"{key}: unknown field", field=str(key))
    if base is None or "reference" in body:
        validate_reference(body.get("reference"))
    subjects = body.get("subject_keys", None if base is None else list(base.subject_keys))
    payload: dict[str, Any] = {
        "name": body.get("name", None if base is None else base.name),
        "key": body.get("reference", None if base is None else base.key),
        "primaryEmail": body.get("email", None if base is None else base.primary_email),
        "usageAttribution": {"subjectKeys": [] if subjects is None else subjects},
    }
    if base is not None:  # a PATCH keeps what it does not name
        payload.update(
            currency=base.currency, description=base.description,
            billingAddress=dict(base.billing_address) if base.billing_address else None,
            metadata=dict(base.metadata) if base.metadata else None,
        )  # fmt: skip
    try:
        return parse_customer_input(payload)
    except InvalidInput as exc:
        raise _renamed(exc) from exc


async def create_customer(request: Request) -> Response:
    inp = customer_input(await read_json(request))
    customer = await call(container(request).customers.create, inp)
    return json_response(customer_json(customer), status=201)


async def list_customers(request: Request) -> Response:
    limit, cursor = page(request.query_params)
    offset = 0
    if cursor is not None:
        if not is_digits(cursor) or int(cursor) > limits.QUERY_INT_MAX:
            raise CatalogInvalid(f"cursor: {cursor[:40]!r} is not a cursor of this list",
                                 field="cursor")  # fmt: skip
        offset = int(cursor)
    paging = Paging(False, 1, limit, limit + 1, offset, False, "createdAt")
    rows, _ = await call(container(request).customers.list, CustomerFilter(), paging)
    body = listing(rows, limit, customer_json, lambda _: str(offset + limit))
    return json_response(body)


async def get_customer(request: Request) -> Response:
    customer = await call(container(request).customers.get, str(request.path_params["ref"]))
    return json_response(customer_json(customer))


async def patch_customer(request: Request) -> Response:
    c = container(request)
    ref = str(request.path_params["ref"])
    body = await read_json(request)
    current = await call(c.customers.get_live, ref)
    updated = await call(c.customers.replace, ref, customer_input(body, current))
    return json_response(customer_json(updated))


async def delete_customer(request: Request) -> Response:
    await call(container(request).customers.delete, str(request.path_params["ref"]))
    return no_content()


def item_json(item: EntitledItem, reserved: Decimal | None = None) -> dict[str, Any]:
    """catalog.md §5: the typed value, its type, where it came from; budgets with usage."""
    e, f = item.effective, item.feature
    out: dict[str, Any] = {"feature_reference": f.reference, "type": f.type, **e.value.data}
    if f.rate_window is not None:
        out["rate_window"] = f.rate_window
    out["source"] = e.source
    out["pricing_plan_reference"] = item.plan_reference
    if item.budget is not None:
        b = item.budget
        # held reservations lower what remains (docs/api/enforcement.md)
        left = b.remaining - reserved if reserved else b.remaining
        remaining = "unlimited" if e.value.unlimited else dec(left)
        out.update(usage=dec(b.usage), remaining=remaining, has_access=b.has_access)
        if reserved:
            out["reserved"] = dec(reserved)
        if b.period_from is not None and b.period_to is not None:
            out["period"] = {"from": format_rfc3339(b.period_from),
                             "to": format_rfc3339(b.period_to)}  # fmt: skip
    return out


def _entitled_and_held(c: Container, ref: str) -> tuple[list[EntitledItem], dict[str, Decimal]]:
    """The one call's reads, on one worker thread: the items, then (with a budget among
    them) the customer's held reservations, by the id the items were read for."""
    customer_id, items = c.subscriptions.entitled(ref)
    if customer_id is None or not any(i.budget is not None for i in items):
        return items, {}
    return items, c.enforcement.held(customer_id)


async def customer_entitlements(request: Request) -> Response:
    c = container(request)
    ref = str(request.path_params["ref"])
    items, held = await call(_entitled_and_held, c, ref)
    return json_response(
        {"entitlements": [item_json(i, held.get(i.feature.reference)) for i in items]}
    )


async def meter_data(request: Request) -> Response:
    q = request.query_params
    customer = get_str(q, "customer_reference")
    meter = get_str(q, "meter_reference")
    for name, value in (("customer_reference", customer), ("meter_reference", meter)):
        if value is None:
            raise CatalogInvalid(f"query parameter {name}: required", field=name)
    assert customer is not None
    assert meter is not None
    usage = await call(container(request).meter_data.current_period, customer, meter)
    return json_response(
        {
            "data": [
                {
                    "meter_reference": meter,
                    "customer_reference": customer,
                    "period": {
                        "from": format_rfc3339(usage.period_from),
                        "to": format_rfc3339(usage.period_to),
                    },
                    "value": dec(usage.value),
                }
            ]
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/v1/customers", create_customer, methods=["POST"]),
    Route("/v1/customers", list_customers, methods=["GET"]),
    Route("/v1/customers/{ref}", get_customer, methods=["GET"]),
    Route("/v1/customers/{ref}", patch_customer, methods=["PATCH"]),
    Route("/v1/customers/{ref}", delete_customer, methods=["DELETE"]),
    Route("/v1/customers/{ref}/entitlements", customer_entitlements, methods=["GET"]),
    Route("/v1/ingest/meter-data", meter_data, methods=["GET"]),
]
