"""Customers: the searchable list and a customer's page (subscription, overrides, usage)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain.entitlement_inputs import Paging
from allotment.http.console.access import Actor
from allotment.http.console.render import page, render
from allotment.http.console.views import PageOf, choice, page_of, text
from allotment.http.runtime import call, container
from allotment.storage.customers_repo import CustomerFilter

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


ROUTES: list[BaseRoute] = [
    Route("/console/customers", customers_page, methods=["GET"]),
]
