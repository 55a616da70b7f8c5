"""`GET /v1/ingest/meter-data` (catalog.md §5): a meter's total for a customer's subjects over
the current period.

The current period is that of the customer's budget on this meter when its active
subscription has one (the budget's usage period, anchored at the subscription's start), else
the calendar month (UTC) containing now. The total is the meter's aggregation over the
customer's key and subject keys from the period's start to now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain.catalog import MeterNotFound
from allotment.domain.errors import NotFound
from allotment.domain.timeutil import ceil_minute
from allotment.services.catalog_subscriptions import SubscriptionService
from allotment.services.customers import CustomerService


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


class MeterTotals(Protocol):
    def query(self, meter_id_or_slug: str, q: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class MeterData:
    period_from: datetime
    period_to: datetime
    value: Decimal


def month_of(at: datetime) -> tuple[datetime, datetime]:
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


class MeterDataService:
    def __init__(
        self,
        clock: Clock,
        customers: CustomerService,
        subscriptions: SubscriptionService,
        meters: MeterLookup,
        meter_queries: MeterTotals,
    ) -> None:
        self._meters = meters
        self._clock = clock
        self._customers = customers
        self._subscriptions = subscriptions
        self._queries = meter_queries

    def current_period(self, customer_ref: str, meter_ref: str) -> MeterData:
        from allotment.services.meter_queries import MeterQuery

        try:
            meter = self._meters.get(meter_ref)
        except NotFound as exc:
            raise MeterNotFound(
                f"meter_reference: meter {meter_ref!r} not found", field="meter_reference"
            ) from exc
        now = self._clock.now().astimezone(UTC)
        period = month_of(now)
        for item in self._subscriptions.entitlements(customer_ref):  # 404/412 for the customer
            if item.feature.meter_reference == meter_ref and item.budget is not None:
                b = item.budget
                if b.period_from is not None and b.period_to is not None:
                    period = (b.period_from, b.period_to)
                break
        customer = self._customers.get_live(customer_ref)
        subjects = self._customers.subjects_of(customer)
        until = min(period[1], ceil_minute(now))
        if not subjects or until <= period[0]:
            return MeterData(period[0], period[1], Decimal(0))
        result = self._queries.query(
            meter, MeterQuery(from_=period[0], to=until, subjects=tuple(subjects))
        )
        total = sum((Decimal(r.value) for r in result.rows), Decimal(0))
        return MeterData(period[0], period[1], total)
