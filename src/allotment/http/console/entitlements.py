"""An entitlement's page: its value now, grants, resets, usage per window this period and the
history's burn-down segments as a chart; the top-up, void and reset forms call the same API
paths an operator would (``…/grants``, ``DELETE /api/v1/grants/{id}``, ``…/reset``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain.errors import NotFound
from allotment.domain.timeutil import format_rfc3339
from allotment.domain.windows import WindowSize, window_count
from allotment.http.console.access import Actor
from allotment.http.console.api_call import api
from allotment.http.console.charts import Series, chart
from allotment.http.console.render import ConsoleProblem, form, page, render, when_short
from allotment.http.console.views import PAGE_ROWS, available, json_number, text
from allotment.http.runtime import call, container
from allotment.services.entitlements import EntitlementView
from allotment.storage.entitlements_repo import EntitlementRecord

EXPIRATIONS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")


def api_base(record: EntitlementRecord) -> str:
    """The entitlement's own API path (its owner's route)."""
    if record.customer_id:
        return f"/api/v2/customers/{record.customer_id}/entitlements/{record.feature_key}"
    return f"/api/v1/subjects/{quote(record.subject_key, safe='')}/entitlements/{record.id}"


HISTORY_WINDOWS = 48
"""The usage chart's windows: hours while the period so far has at most 48, else days (else
months)."""


def _history_size(start: datetime, end: datetime) -> WindowSize:
    for size in (WindowSize.HOUR, WindowSize.DAY):
        if window_count(start, end, size, UTC) <= HISTORY_WINDOWS:
            return size
    return (
        WindowSize.DAY
        if window_count(start, end, WindowSize.DAY, UTC) <= 400
        else (WindowSize.MONTH)
    )


def _burndown(c: Container, view: EntitlementView) -> dict[str, Any]:
    record = view.record
    period = view.current_usage_period
    now = c.clock.now()
    if period is None:
        return {"usage_chart": None, "burndown_chart": None, "segments": [], "size": None}
    size = _history_size(period.start, now)
    history = c.entitlements.history(record.owner, record.id, size.value, None, None, "UTC")
    windows = history.history.windowed
    fmt = "%m-%d %H:%M" if size is WindowSize.HOUR else "%Y-%m-%d"
    usage_chart = chart(
        [w.from_.strftime(fmt) for w in windows],
        [Series("", [w.usage for w in windows])],
        title=f"{record.feature_key}: usage per {size.value.lower()} this period",
    )
    segments = history.history.burndown
    labels = [when_short(b.from_) for b in segments]
    balances: list[Decimal | None] = [b.balance_at_start for b in segments]
    overages: list[Decimal | None] = [b.overage for b in segments]
    if segments:
        labels.append(when_short(segments[-1].to))
        balances.append(segments[-1].balance_at_end)
        overages.append(segments[-1].overage)
    burndown_chart = chart(
        labels,
        [Series("balance", balances), Series("overage", overages)],
        title=f"{record.feature_key}: burn-down segments",
    )
    return {"usage_chart": usage_chart, "burndown_chart": burndown_chart,
            "segments": segments[-PAGE_ROWS:], "size": size.value}  # fmt: skip


def entitlement_view(c: Container, entitlement_id: str) -> dict[str, Any]:
    view = c.entitlements.get_by_id(entitlement_id)
    record = view.record
    customer = c.customers.get(record.customer_id) if record.customer_id else None
    out: dict[str, Any] = {"view": view, "record": record, "customer": customer,
                           "value": None, "grants": [], "resets": [], "metered": False,
                           "usage_chart": None, "burndown_chart": None, "segments": []}  # fmt: skip
    if record.deleted_at is not None:
        return out
    try:
        out["value"] = c.entitlements.value(record.owner, record.id, None)
    except NotFound:
        out["value"] = None
    if record.type != "metered":
        return out
    out["metered"] = True
    grants = c.grants.list_for_entitlement(record.owner, record.id, True)
    out["grants"] = sorted(grants, key=lambda g: (g.effective_at, g.id), reverse=True)[:PAGE_ROWS]
    out["resets"] = list(reversed(c.entitlements.resets(record.id)))[:PAGE_ROWS]
    out.update(_burndown(c, view))
    m = out["value"].metered if out["value"] is not None else None
    out["limit"] = None if m is None else available(m.usage, m.balance, m.overage)
    return out


async def _page(
    request: Request, actor: Actor, status: int = 200, error: str | None = None
) -> Response:
    view = await call(entitlement_view, container(request), request.path_params["id"])
    return render(
        request, actor, "entitlement.html", status=status, error=error,
        message=text(request.query_params, "done"), expirations=EXPIRATIONS,
        now=container(request).clock.now(), **view,
    )  # fmt: skip


@page
async def entitlement_page(request: Request, actor: Actor) -> Response:
    return await _page(request, actor)


async def _record(request: Request) -> EntitlementRecord:
    view = await call(container(request).entitlements.get_by_id, request.path_params["id"])
    return view.record


def _done(record: EntitlementRecord, what: str) -> Response:
    return RedirectResponse(f"/console/entitlements/{record.id}?done={quote(what)}", 303)


@page
async def top_up(request: Request, actor: Actor) -> Response:
    """A grant: amount, priority, expiration; effective now."""
    fields = form(request)
    record = await _record(request)
    body: dict[str, Any] = {
        "amount": json_number(fields.get("amount", "")),
        "effectiveAt": format_rfc3339(container(request).clock.now()),
    }
    if fields.get("priority", "").strip():
        body["priority"] = json_number(fields["priority"])
    unit = fields.get("expiration", "").strip()
    if unit:
        body["expiration"] = {"duration": unit, "count": json_number(fields.get("count", "1"))}
    answer = await api(request, actor, "POST", api_base(record) + "/grants", body)
    if not answer.ok:
        return await _page(request, actor, answer.status, answer.words())
    return _done(record, f"granted {fields.get('amount', '').strip()}")


@page
async def void(request: Request, actor: Actor) -> Response:
    record = await _record(request)
    grant_id = form(request).get("grant_id", "").strip()
    if not grant_id:
        raise ConsoleProblem(400, "grant_id: required")
    path = f"/api/v1/grants/{quote(grant_id, safe='')}"
    answer = await api(request, actor, "DELETE", path)
    if not answer.ok:
        return await _page(request, actor, answer.status, answer.words())
    return _done(record, f"voided grant {grant_id}")


@page
async def reset(request: Request, actor: Actor) -> Response:
    fields = form(request)
    record = await _record(request)
    body: dict[str, Any] = {}
    if fields.get("retain_anchor") == "on":
        body["retainAnchor"] = True
    if fields.get("preserve_overage") in ("yes", "no"):
        body["preserveOverage"] = fields["preserve_overage"] == "yes"
    answer = await api(request, actor, "POST", api_base(record) + "/reset", body)
    if not answer.ok:
        return await _page(request, actor, answer.status, answer.words())
    return _done(record, "usage reset")


ROUTES: list[BaseRoute] = [
    Route("/console/entitlements/{id}", entitlement_page, methods=["GET"]),
    Route("/console/entitlements/{id}/grants", top_up, methods=["POST"]),
    Route("/console/entitlements/{id}/void", void, methods=["POST"]),
    Route("/console/entitlements/{id}/reset", reset, methods=["POST"]),
]
