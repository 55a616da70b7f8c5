"""What the customer usage page shows for one portal token (docs/console.md, "The customer's
usage page"): whose data it is, their entitlements with this period's usage, and a daily chart
per meter the token allows. Everything is read for the token's owner only; no parameter of
the request can name anyone else.

* The token's subject is a live customer's **key** → the customer: its own entitlements
  (those of its plan included), usage over its key and subject keys.
* Otherwise → that subject alone: its entitlements, its events (a subject key of some customer
  sees its own usage, never its siblings' or the customer's budgets, which count them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from markupsafe import Markup

from allotment.container import Container
from allotment.domain.customers import Customer
from allotment.domain.errors import NotFound
from allotment.domain.features import Feature
from allotment.domain.meters import Meter
from allotment.domain.owners import Owner
from allotment.domain.periods import Period
from allotment.domain.portal_tokens import meter_allowed
from allotment.domain.windows import WindowSize
from allotment.http.console.charts import Series, chart
from allotment.http.console.customers import EntitlementRow
from allotment.http.console.customers import _value as entitlement_value
from allotment.http.console.views import typed_value
from allotment.services.meter_queries import MeterQuery
from allotment.storage.portal_repo import PortalTokenRecord

TYPED_KEYS = {"number": "NUMBER", "enums": "ENUM", "switch": "SWITCH", "amount": "AMOUNT"}
"""A catalog value's key → its type (a plan's static values are stored as ``{key: value}``)."""
METERS_MAX = 12
"""At most this many meter charts on the page (the token's meters, in slug order)."""
ENTITLEMENTS_MAX = 50


@dataclass(frozen=True)
class PortalOwner:
    """Whose page it is: a customer (by its key) or a bare subject."""

    token: PortalTokenRecord
    customer: Customer | None
    owner: Owner
    subjects: tuple[str, ...]
    """The event subjects whose usage is shown."""

    @property
    def title(self) -> str:
        return self.customer.name if self.customer is not None else self.token.subject


@dataclass(frozen=True)
class Budget:
    """One entitlement of the owner, its value now (the customer page's row), its feature."""

    row: EntitlementRow
    feature: Feature | None

    @property
    def name(self) -> str:
        return self.feature.name if self.feature is not None else self.row.record.feature_key

    @property
    def config(self) -> str | None:
        """A static entitlement's value for people: a plan's typed value (``{"number":
        "600"}`` → 600, enums joined), else its JSON as it is."""
        raw = self.row.record.config
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(data, dict) and len(data) == 1:
            kind = TYPED_KEYS.get(next(iter(data)))
            if kind is not None:
                return typed_value(data, kind)
        return raw


@dataclass(frozen=True)
class MeterUsage:
    meter: Meter
    period: Period
    window: WindowSize
    total: Decimal
    chart: Markup
    budgeted: bool
    """The period is that of a budget on this meter (else the calendar month, UTC)."""


def owner_of_token(c: Container, token: PortalTokenRecord) -> PortalOwner:
    customer = c.customers.by_key(token.subject)
    if customer is not None:
        subjects = c.customers.subjects_of(customer)
        return PortalOwner(token, customer, Owner.customer(customer.id), subjects)
    return PortalOwner(token, None, Owner.subject(token.subject), (token.subject,))


def _feature(c: Container, feature_id: str) -> Feature | None:
    try:
        return c.features.get(feature_id)
    except NotFound:
        return None


def budgets(c: Container, who: PortalOwner) -> list[Budget]:
    """The owner's live entitlements, but those counting a meter the token does not allow."""
    out: list[Budget] = []
    for view in c.entitlements.list_for_owner(who.owner, False):
        feature = _feature(c, view.record.feature_id)
        meter = None if feature is None else feature.meter_slug
        if meter is not None and not meter_allowed(who.token.allowed_meter_slugs, meter):
            continue
        out.append(Budget(EntitlementRow(view, entitlement_value(c, view), who.title), feature))
        if len(out) == ENTITLEMENTS_MAX:
            break
    return out


def span(period: Period) -> str:
    """``Nov 1 → Dec 1, 2026`` (times only when a bound is not midnight UTC)."""

    def one(at: datetime, year: bool) -> str:
        at = at.astimezone(UTC)
        text = f"{at:%b} {at.day}" + (f", {at.year}" if year else "")
        return text + (f" {at:%H:%M}" if (at.hour, at.minute) != (0, 0) else "")

    return f"{one(period.start, period.start.year != period.end.year)} → {one(period.end, True)}"


def calendar_month(now: datetime) -> Period:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return Period(start, end)


def window_for(period: Period) -> WindowSize:
    """Hours for a day-long period, days up to two months, months beyond."""
    span = period.end - period.start
    if span <= timedelta(days=2):
        return WindowSize.HOUR
    return WindowSize.DAY if span <= timedelta(days=62) else WindowSize.MONTH


def _steps(period: Period, window: WindowSize) -> list[datetime]:
    out: list[datetime] = []
    at = period.start
    while at < period.end:
        out.append(at)
        if window is WindowSize.HOUR:
            at += timedelta(hours=1)
        elif window is WindowSize.DAY:
            at += timedelta(days=1)
        else:
            at = (at.replace(day=1) + timedelta(days=32)).replace(day=1)
    return out


def label(at: datetime, window: WindowSize) -> str:
    if window is WindowSize.HOUR:
        return at.strftime("%H:00")
    if window is WindowSize.DAY:
        return f"{at:%b} {at.day}"
    return at.strftime("%b %Y")


def meter_usage(
    c: Container, who: PortalOwner, meter: Meter, period: Period, budgeted: bool
) -> MeterUsage:
    """The meter's usage over the owner's subjects in ``period``, a bar per window up to now
    (windows still to come are left empty)."""
    now = c.clock.now().astimezone(UTC)
    window = window_for(period)
    starts = _steps(period, window)
    by_start: dict[datetime, Decimal] = {}
    if who.subjects:
        query = MeterQuery(
            from_=period.start, to=period.end, window_size=window, subjects=who.subjects
        )
        for row in c.meter_queries.query(meter.slug, query).rows:
            start = row.window_start.astimezone(UTC)
            by_start[start] = by_start.get(start, Decimal(0)) + Decimal(row.value)
    values: list[Decimal | None] = [
        by_start.get(at, Decimal(0)) if at <= now else None for at in starts
    ]
    total = sum((v for v in values if v is not None), Decimal(0))
    labels = [label(at, window) for at in starts]
    drawn = chart(
        labels, [Series(meter.slug, values)], title=f"{meter.name} per {window.value.lower()}"
    )
    return MeterUsage(meter, period, window, total, drawn, budgeted)


def allowed_meters(c: Container, token: PortalTokenRecord) -> list[Meter]:
    live = sorted(c.meters.list(), key=lambda m: m.slug)
    return [m for m in live if meter_allowed(token.allowed_meter_slugs, m.slug)][:METERS_MAX]


def usage_view(c: Container, token: PortalTokenRecord) -> dict[str, object]:
    """Everything the page renders, for the token's owner only."""
    who = owner_of_token(c, token)
    rows = budgets(c, who)
    period_of: dict[str, Period] = {}
    for row in rows:
        slug = None if row.feature is None else row.feature.meter_slug
        period = row.row.view.current_usage_period
        if slug is not None and period is not None:
            period_of.setdefault(slug, period)
    month = calendar_month(c.clock.now())
    meters = [
        meter_usage(c, who, m, period_of.get(m.slug, month), m.slug in period_of)
        for m in allowed_meters(c, token)
    ]
    return {"who": who, "budgets": rows, "meters": meters, "now": c.clock.now(), "span": span}
