"""Meters: the list, and a meter's usage chart (window size, range, group-by, time zone) read
through the meter query service — the same query ``GET /api/v1/meters/{slug}/query`` answers.

Grouped by subject, the chart is paged in subject-key order by default (``after=`` the last
key of the page before, :data:`PAGE_ROWS` subjects a page, found by index; the meter query
then reads those subjects alone); ``order=usage`` ranks every subject by its total over the
range instead, which reads all the range's rows (slower at scale: docs/console.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.container import Container
from allotment.domain.decimals import EXACT
from allotment.domain.errors import DomainError
from allotment.domain.meters import Aggregation
from allotment.domain.timeutil import to_micros
from allotment.domain.windows import (
    WindowGrid,
    WindowSize,
    floor_window,
    next_window,
    parse_time_zone,
    window_count,
)
from allotment.http.console.access import Actor
from allotment.http.console.charts import Series, chart
from allotment.http.console.render import ConsoleProblem, page, render
from allotment.http.console.views import PAGE_ROWS, choice, page_of, text
from allotment.http.runtime import call, container
from allotment.services.meter_queries import MeterQuery, MeterQueryRow

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
          "30d": timedelta(days=30), "90d": timedelta(days=90),
          "365d": timedelta(days=365)}  # fmt: skip
CHART_WINDOWS_MAX = 400
"""Windows one chart draws at most (a year of days fits); a finer choice asks for a larger
window or a shorter range."""
CHART_SERIES_MAX = 8
"""Groups drawn as lines at most (the largest by total); the table lists up to 50."""
TIME_ZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York",
              "America/Los_Angeles", "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney")  # fmt: skip
_ADDITIVE = (Aggregation.SUM, Aggregation.COUNT)
ORDERS = ("subject", "usage")
"""How the chart grouped by subject picks its subjects: a page in key order, or by usage."""
AFTER_MAX = 1024
"""Characters of ``after`` (a subject key) at most."""


@dataclass(frozen=True)
class Group:
    """One line of the chart (a row of the table): its value per window and their exact sum
    (added as the rows come in: sorting 10 000 subjects by a computed total cost 50 ms)."""

    label: str
    values: list[Decimal | None]
    total: Decimal

    @property
    def peak(self) -> Decimal:
        return max((v for v in self.values if v is not None), default=Decimal(0))


def _label(start: datetime, size: WindowSize, tz: tzinfo) -> str:
    local = start.astimezone(tz)
    if size is WindowSize.MONTH:
        return local.strftime("%Y-%m")
    if size is WindowSize.DAY:
        return local.strftime("%m-%d")
    return local.strftime("%H:%M")


def _group_of(row: MeterQueryRow, group: str) -> str:
    if not group:
        return "all"
    value = row.subject if group == "subject" else row.group_by.get(group)
    return value or "(none)"


def usage_view(
    c: Container,
    slug: str,
    size: WindowSize,
    span: str,
    group: str,
    tz_name: str,
    order: str = "subject",
    after: str = "",
) -> dict[str, Any]:
    meter = c.meters.get(slug)
    tz = parse_time_zone(tz_name)
    now = c.clock.now()
    start = floor_window(now - RANGES[span], size, tz)
    end = next_window(floor_window(now, size, tz), size, tz)
    view: dict[str, Any] = {"meter": meter, "from_": start, "to": end, "chart": None,
                            "groups": [], "hidden": 0, "error": None,
                            "next_after": None}  # fmt: skip
    count = window_count(start, end, size, tz)
    if count > CHART_WINDOWS_MAX:
        view["error"] = (
            f"{count} {size} windows in {span} is more than one chart draws "
            f"({CHART_WINDOWS_MAX}); choose a larger window or a shorter range"
        )
        return view
    if group and group != "subject" and group not in meter.group_by:
        raise ConsoleProblem(
            400, f"group: {group!r} is not a groupBy key of meter {meter.slug} "
            f"(one of: subject{''.join(', ' + k for k in sorted(meter.group_by))})",
        )  # fmt: skip
    subjects, groups_found = None, None
    keyed: dict[str, int] | None = None  # a page in key order: each subject's place on it
    if group == "subject" and order == "subject":
        found = c.meter_queries.subjects_after(meter.slug, start, end, after, PAGE_ROWS + 1)
        if len(found) > PAGE_ROWS:
            view["next_after"] = found[PAGE_ROWS - 1]
        keyed = {s: i for i, s in enumerate(found[:PAGE_ROWS])}
        subjects = tuple(keyed)
    elif group == "subject":
        # rank the subjects in the database and chart only the listed ones: at 10 k subjects
        # a row per subject and window would take seconds to build (None: not exactly there)
        ranked = c.meter_queries.top_subjects(meter.slug, start, end, PAGE_ROWS)
        if ranked is not None:
            subjects, groups_found = tuple(s for s, _ in ranked[0]), ranked[1]
    q = MeterQuery(from_=start, to=end, window_size=size, time_zone=tz, subjects=subjects,
                   group_by=(group,) if group else ())  # fmt: skip
    rows = c.meter_queries.query(meter.slug, q).rows if subjects != () else []
    grid = WindowGrid.build(start, end, size, tz)
    windows = len(grid.bounds) - 1
    fill = Decimal(0) if meter.aggregation in _ADDITIVE else None
    by_group: dict[str, list[Decimal | None]] = {}
    totals: dict[str, Decimal] = {}
    index: dict[datetime, int | None] = {}  # rows of one window share its datetime
    for row in rows:
        label = _group_of(row, group)
        values = by_group.get(label)
        if values is None:
            values = by_group[label] = [fill] * windows
            totals[label] = Decimal(0)
        i = index.get(row.window_start, -1)
        if i == -1:
            i = index[row.window_start] = grid.index(to_micros(row.window_start))
        if i is not None:
            value = values[i] = Decimal(row.value)
            totals[label] = EXACT.add(totals[label], value)
    largest = sorted(by_group, key=lambda label: (-totals[label], label))
    groups = [Group(label, by_group[label], totals[label]) for label in largest]
    if not group and not groups:
        groups = [Group("all", [fill] * windows, Decimal(0))]
    labels = [_label(grid.window(i)[0], size, tz) for i in range(windows)]
    drawn = groups[:CHART_SERIES_MAX]
    if keyed is not None:  # the table in the page's key order; the chart its largest
        groups = sorted(groups, key=lambda g: keyed[g.label])
    title = f"{meter.name}: {meter.aggregation} per {size.lower()}"
    view["chart"] = chart(labels, [Series("" if not group else g.label, g.values)
                                   for g in drawn], title=title)  # fmt: skip
    view["groups"] = groups[:PAGE_ROWS]
    view["hidden"] = max(0, (groups_found or len(groups)) - CHART_SERIES_MAX)
    view["found"] = groups_found or len(groups)
    view["windows"] = [(grid.window(i)[0], labels[i]) for i in range(windows)]
    return view


@page
async def meters_page(request: Request, actor: Actor) -> Response:
    at = page_of(request.query_params)
    meters = await call(container(request).meters.list)
    shown = meters[at.offset : at.offset + at.rows]
    return render(request, actor, "meters.html", meters=shown, page=at.number,
                  pages=at.count(len(meters)), total=len(meters), params={})  # fmt: skip


@page
async def meter_page(request: Request, actor: Actor) -> Response:
    params = request.query_params
    size = WindowSize(choice(params, "window", tuple(WindowSize), "HOUR"))
    span = choice(params, "range", tuple(RANGES), "24h")
    group = text(params, "group", 64)
    tz_name = text(params, "tz", 64) or "UTC"
    order = choice(params, "order", ORDERS, "subject")
    after = params.get("after") or ""
    if len(after) > AFTER_MAX:
        raise ConsoleProblem(400, f"after: at most {AFTER_MAX} characters, got {len(after)}")
    if after and (group != "subject" or order != "subject"):
        raise ConsoleProblem(400, "after: pages the chart grouped by subject in key order "
                             "only (group=subject, order=subject)")  # fmt: skip
    slug = request.path_params["slug"]
    try:
        view = await call(
            usage_view, container(request), slug, size, span, group, tz_name, order, after
        )
    except DomainError as exc:
        if exc.field != "windowTimeZone":
            raise
        raise ConsoleProblem(400, f"tz: {exc.detail}") from exc
    here = {"window": size.value, "range": span, "group": group, "tz": tz_name, "order": order}
    nxt = view.pop("next_after")
    return render(
        request, actor, "meter.html", window=size.value, span=span, group=group, tz=tz_name,
        order=order, after=after, orders=ORDERS, first_href="?" + urlencode(here),
        next_href=None if nxt is None else "?" + urlencode(here | {"after": nxt}),
        ranges=list(RANGES), sizes=[s.value for s in WindowSize], zones=TIME_ZONES,
        additive=view["meter"].aggregation in _ADDITIVE, drawn=CHART_SERIES_MAX, **view,
    )  # fmt: skip


ROUTES: list[BaseRoute] = [
    Route("/console/meters", meters_page, methods=["GET"]),
    Route("/console/meters/{slug}", meter_page, methods=["GET"]),
]
