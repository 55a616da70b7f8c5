"""What is happening: recent notification events with their delivery status, and the ingest
rate (events per minute over the last hour) with the latest events."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain import limits
from allotment.domain.entitlement_inputs import Paging
from allotment.http.console.access import Actor
from allotment.http.console.charts import Series, chart
from allotment.http.console.render import page, render
from allotment.http.console.views import PageOf, page_of, text
from allotment.http.runtime import call, container
from allotment.services.events import EventQuery
from allotment.storage.notifications_repo import EventFilter

RATE_MINUTES = 60
LATEST_EVENTS = 20
PAYLOAD_CHARS_MAX = 4000
"""A notification's payload shown on the page at most this long (the API has it whole)."""


def _pretty(payload: str) -> str:
    try:
        shown = json.dumps(json.loads(payload), indent=2, sort_keys=True)
    except ValueError:
        shown = payload
    return shown if len(shown) <= PAYLOAD_CHARS_MAX else shown[:PAYLOAD_CHARS_MAX] + "\n…"


def notifications_view(c: Container, at: PageOf, subject: str, feature: str) -> dict[str, Any]:
    f = EventFilter(subjects=(subject,) if subject else (), features=(feature,) if feature else ())
    paging = Paging(True, at.number, at.rows, at.rows, at.offset, True, "createdAt")
    views, total = c.notifications.list_events(f, paging)
    return {"events": [(v, _pretty(v.event.payload)) for v in views], "total": total,
            "pages": at.count(total)}  # fmt: skip


@page
async def notifications_page(request: Request, actor: Actor) -> Response:
    params = request.query_params
    at = page_of(params)
    subject, feature = text(params, "subject", 256), text(params, "feature", 64)
    view = await call(notifications_view, container(request), at, subject, feature)
    return render(request, actor, "notifications.html", page=at.number, subject=subject,
                  feature=feature, params={"subject": subject, "feature": feature},
                  **view)  # fmt: skip


def ingest_view(c: Container) -> dict[str, Any]:
    rate = c.ingest_rate.per_minute(RATE_MINUTES)
    labels = [m.strftime("%H:%M") for m, _ in rate.minutes]
    title = f"events per minute, last {RATE_MINUTES} minutes"
    drawn = chart(labels, [Series("", [Decimal(n) for _, n in rate.minutes])], title=title,
                  unit="events")  # fmt: skip
    latest = c.events.list(EventQuery(limit=LATEST_EVENTS))
    return {"rate": rate, "chart": drawn, "latest": latest,
            "per_minute": Decimal(rate.total) / RATE_MINUTES}  # fmt: skip


@page
async def ingest_page(request: Request, actor: Actor) -> Response:
    view = await call(ingest_view, container(request))
    return render(request, actor, "ingest.html", minutes=RATE_MINUTES,
                  window_days=limits.EVENTS_LIST_WINDOW_DAYS, **view)  # fmt: skip


ROUTES: list[BaseRoute] = [
    Route("/console/notifications", notifications_page, methods=["GET"]),
    Route("/console/ingest", ingest_page, methods=["GET"]),
]
