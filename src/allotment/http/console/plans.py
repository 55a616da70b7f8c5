"""Plans side by side: the feature × plan table of the active versions, and one plan's versions
side by side (what changed from one version to the next)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain.catalog import TypedValue
from allotment.domain.errors import NotFound
from allotment.http.console.access import Actor
from allotment.http.console.render import page, render
from allotment.http.console.views import PAGE_ROWS, choice, text, typed_value
from allotment.http.runtime import call, container
from allotment.services.catalog import PlanView

PLAN_COLUMNS = 8
"""Plans (or versions) side by side on one page; more are a page further."""


@dataclass(frozen=True)
class Matrix:
    """Rows: features; columns: plans or versions; a cell: the typed value, or None."""

    columns: list[str]
    features: list[tuple[str, str, str]]
    """(reference, name, type) of every feature some column gives, by reference."""
    cells: dict[tuple[str, int], TypedValue]

    def cell(self, reference: str, column: int) -> str | None:
        value = self.cells.get((reference, column))
        return None if value is None else typed_value(value.data, value.type)

    def changed(self, reference: str, column: int) -> bool:
        """Whether the value differs from the column before (a version's change)."""
        if column == 0:
            return False
        return self.cell(reference, column) != self.cell(reference, column - 1)


def _matrix(c: Container, columns: list[str], versions: list[tuple[TypedValue, ...]]) -> Matrix:
    cells = {(v.feature_reference, i): v for i, vs in enumerate(versions) for v in vs}
    refs = sorted({ref for ref, _ in cells})[:PAGE_ROWS]
    names: dict[str, tuple[str, str]] = {}
    for ref in refs:
        try:
            f = c.catalog.feature(ref)
            names[ref] = (f.feature.name, f.type)
        except NotFound:  # archived since: still shown, by reference
            names[ref] = (ref, next(v.type for (r, _), v in cells.items() if r == ref))
    return Matrix(columns, [(r, *names[r]) for r in refs], cells)


def plans_view(c: Container, after: str | None, archived: bool) -> dict[str, Any]:
    found = c.catalog.plans(after, PLAN_COLUMNS, archived)
    shown: list[PlanView] = found[:PLAN_COLUMNS]
    more = len(found) > PLAN_COLUMNS
    matrix = _matrix(c, [p.plan.reference for p in shown], [p.version.values for p in shown])
    return {"plans": shown, "matrix": matrix,
            "next": shown[-1].plan.reference if more and shown else None}  # fmt: skip


@page
async def plans_page(request: Request, actor: Actor) -> Response:
    params = request.query_params
    after = text(params, "after", 64) or None
    archived = choice(params, "archived", ("no", "yes"), "no") == "yes"
    view = await call(plans_view, container(request), after, archived)
    return render(request, actor, "plans.html", after=after, archived=archived,
                  params={"archived": "yes" if archived else None}, **view)  # fmt: skip


def plan_view(c: Container, reference: str, before: int | None) -> dict[str, Any]:
    current = c.catalog.plan(reference)
    numbers = [n for n, _ in current.versions if before is None or n < before]
    chosen = numbers[-PLAN_COLUMNS:]
    views = [c.catalog.plan(reference, n) for n in chosen]
    matrix = _matrix(c, [f"version {n}" for n in chosen], [v.version.values for v in views])
    return {"plan": current.plan, "views": views, "matrix": matrix,
            "older": chosen[0] if len(numbers) > len(chosen) else None,
            "customers": len(c.subscriptions.customers_on_plan(reference))}  # fmt: skip


@page
async def plan_page(request: Request, actor: Actor) -> Response:
    raw = request.query_params.get("before")
    before = int(raw) if raw and raw.isdigit() else None
    view = await call(plan_view, container(request), request.path_params["plan"], before)
    return render(request, actor, "plan.html", **view)


ROUTES: list[BaseRoute] = [
    Route("/console/plans", plans_page, methods=["GET"]),
    Route("/console/plans/{plan}", plan_page, methods=["GET"]),
]
