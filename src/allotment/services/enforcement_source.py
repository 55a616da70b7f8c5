"""The catalog as enforcement sees it: :class:`~allotment.services.enforcement.EntitlementSource`
over customers, their active subscription's effective values and the budgets' state
(catalog.md §4–§5)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from allotment.domain.enforcement import Budget, CustomerEntitlements, Entitled
from allotment.services.catalog import CatalogService
from allotment.services.catalog_subscriptions import EntitledItem, SubscriptionService
from allotment.services.customers import CustomerService


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


class PeriodUsage(Protocol):
    def current_period(self, customer_ref: str, meter_ref: str) -> Any: ...


class EnforcementCatalog:
    def __init__(
        self,
        customers: CustomerService,
        subscriptions: SubscriptionService,
        catalog: CatalogService,
        meters: MeterLookup,
        usage: PeriodUsage,
    ) -> None:
        self._customers = customers
        self._subscriptions = subscriptions
        self._catalog = catalog
        self._meters = meters
        self._usage = usage

    def customer_entitlements(self, customer_ref: str) -> CustomerEntitlements:
        view = self._subscriptions.current(customer_ref)  # 404 unknown, 412 deleted
        if view is None:
            customer = self._customers.get_live(customer_ref)
            return CustomerEntitlements(customer.id, customer.key or customer_ref, None, {})
        values = {
            item.feature.reference: self._entitled(customer_ref, item)
            for item in self._subscriptions.entitlements(customer_ref)
        }
        return CustomerEntitlements(
            view.customer.id, view.customer.key or customer_ref, view.plan.reference, values
        )

    def customer_id(self, customer_ref: str) -> str:
        return self._customers.get_live(customer_ref).id

    def _entitled(self, customer_ref: str, item: EntitledItem) -> Entitled:
        v, f = item.effective.value, item.feature
        budget = None
        if f.is_budget and f.meter_reference is not None:
            meter = self._meters.get(f.meter_reference)
            if item.budget is not None:
                usage = item.budget.usage
                balance = item.budget.remaining
            else:  # no budget entitlement behind the value: the period's meter total
                usage = Decimal(self._usage.current_period(customer_ref, f.meter_reference).value)
                balance = (v.number or Decimal(0)) - usage
            budget = Budget(balance, usage, False, meter.event_type, meter.value_property)
        return Entitled(
            feature_reference=f.reference,
            type=v.type,
            number=v.number,
            unlimited=v.unlimited,
            rate_window=f.rate_window,
            enums=tuple(v.data.get("enums") or ()),
            switch=v.switch if v.type == "SWITCH" else None,
            budget=budget,
        )

    def plans_including(self, feature_reference: str, value: str) -> Sequence[str]:
        """Live plans whose active version's ENUM value includes ``value`` (the 403's hint)."""
        found: list[str] = []
        cursor = None
        while True:
            page = self._catalog.plans(cursor, 1000, False)
            for p in page[:1000]:
                for x in p.version.values:
                    if x.feature_reference == feature_reference and value in (
                        x.data.get("enums") or ()
                    ):
                        found.append(p.plan.reference)
            if len(page) <= 1000:
                return sorted(found)
            cursor = page[999].plan.reference
