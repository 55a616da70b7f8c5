"""Customers: the searchable list and a customer's page (subscription, overrides, usage)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.entitlement_math import MeteredValue
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import NotFound
from allotment.domain.owners import Owner
from allotment.http.console.access import Actor
from allotment.http.console.api_call import api
from allotment.http.console.render import form, page, render
from allotment.http.console.views import (
    PAGE_ROWS,
    PageOf,
    available,
    choice,
    form_value,
    page_of,
    text,
    typed_value,
)
from allotment.http.runtime import call, container
from allotment.services.entitlements import EntitlementView
from allotment.storage.customers_repo import CustomerFilter
from allotment.storage.entitlements_repo import EntitlementRecord

SEARCH_FIELDS = ("key", "name", "email", "subject")


def list_view(c: Container, by: str, q: str, at: PageOf) -> dict[str, Any]:
    f = CustomerFilter(
        key=q if by == "key" and q else None,
        name=q if by == "name" and q else None,
        primary_email=q if by == "email" and q else None,
        subject=q if by == "subject" and q else None,
    )
    paging = Paging(True, at.number, at.rows, at.rows, at.offset, False, "name")
    customers, total = c.customers.list(f, paging)
    return {"customers": customers, "total": total, "pages": at.count(total)}


@page
async def customers_page(request: Request, actor: Actor) -> Response:
    params = request.query_params
    by = choice(params, "by", SEARCH_FIELDS, "key")
    q = text(params, "q")
    at = page_of(params)
    view = await call(list_view, container(request), by, q, at)
    return render(
        request, actor, "customers.html", by=by, q=q, page=at.number,
        params={"by": by, "q": q}, **view,
    )  # fmt: skip


@dataclass(frozen=True)
class EntitlementRow:
    """One API entitlement of the customer (its own, or one of its subjects') and its value."""

    view: EntitlementView
    value: ValueView | None
    owner: str

    @property
    def record(self) -> EntitlementRecord:
        return self.view.record

    @property
    def metered(self) -> MeteredValue | None:
        return None if self.value is None else self.value.metered

    @property
    def limit(self) -> Decimal | None:
        m = self.metered
        return None if m is None else available(m.usage, m.balance, m.overage)


def _value(c: Container, row: EntitlementView) -> ValueView | None:
    try:
        return c.entitlements.value(row.record.owner, row.record.id, None)
    except NotFound:
        return None


def detail_view(c: Container, ref: str) -> dict[str, Any]:
    customer = c.customers.get(ref)
    sub = None if customer.is_deleted else c.subscriptions.current(customer.id)
    items = c.subscriptions.entitlements(customer.id) if sub is not None else []
    owners = [(Owner.customer(customer.id), "customer")] + [
        (Owner.subject(s), f"subject {s}") for s in c.customers.subjects_of(customer)
    ]
    rows: list[EntitlementRow] = []
    for owner, label in owners:
        for view in c.entitlements.list_for_owner(owner, False)[: PAGE_ROWS - len(rows)]:
            rows.append(EntitlementRow(view, _value(c, view), label))
    by_feature = {r.record.feature_key: r.record.id for r in rows if r.record.customer_id}
    features = c.catalog.features(None, PAGE_ROWS)
    overridable = sorted(
        {f.reference: f for f in [*features, *(sub.features.values() if sub else [])]}.values(),
        key=lambda f: f.reference,
    )
    return {
        "customer": customer, "sub": sub, "items": items, "rows": rows,
        "entitlement_of": by_feature, "features": overridable,
    }  # fmt: skip


async def _detail(
    request: Request, actor: Actor, status: int = 200, error: str | None = None
) -> Response:
    ref = request.path_params["ref"]
    view = await call(detail_view, container(request), ref)
    return render(
        request, actor, "customer.html", status=status, error=error,
        message=text(request.query_params, "done"), typed=typed_value, **view,
    )  # fmt: skip


@page
async def customer_page(request: Request, actor: Actor) -> Response:
    return await _detail(request, actor)


async def _patch_override(request: Request, actor: Actor, item: dict[str, Any]) -> Response:
    ref = request.path_params["ref"]
    c = container(request)
    customer = await call(c.customers.get, ref)
    sub = await call(c.subscriptions.current, customer.id)
    if sub is None:
        return await _detail(request, actor, 400, "the customer has no active subscription")
    path = f"/v1/pricing-plan-subscriptions/{sub.subscription.id}"
    answer = await api(request, actor, "PATCH", path, {"entitlements": [item]}, before=path)
    if not answer.ok:
        return await _detail(request, actor, answer.status, answer.words())
    verb = "set" if item.get("override", True) else "removed"
    done = f"override {verb}: {item['feature_reference']}"
    return RedirectResponse(f"/console/customers/{customer.id}?done={quote(done)}", 303)


@page
async def set_override(request: Request, actor: Actor) -> Response:
    fields = form(request)
    reference = fields.get("feature_reference", "").strip()
    c = container(request)
    try:
        feature = await call(c.catalog.feature, reference)
    except NotFound:
        return await _detail(
            request, actor, 400, f"feature_reference: no live feature {reference!r}"
        )
    item = {"feature_reference": reference,
            **form_value(feature.type, fields.get("value", ""), feature.currency)}  # fmt: skip
    return await _patch_override(request, actor, item)


@page
async def remove_override(request: Request, actor: Actor) -> Response:
    reference = form(request).get("feature_reference", "").strip()
    return await _patch_override(
        request, actor, {"feature_reference": reference, "override": False}
    )


ROUTES: list[BaseRoute] = [
    Route("/console/customers", customers_page, methods=["GET"]),
    Route("/console/customers/{ref}", customer_page, methods=["GET"]),
    Route("/console/customers/{ref}/overrides", set_override, methods=["POST"]),
    Route("/console/customers/{ref}/overrides/remove", remove_override, methods=["POST"]),
]
