"""The catalog as enforcement sees it: :class:`~allotment.services.enforcement.EntitlementSource`
over customers, their active subscription's effective values and the budgets' state
(catalog.md §4–§5).

One catalog version read per authorize: :meth:`EnforcementCatalog.identify` answers an
:class:`Identified`, which carries the subscription view it was resolved from; handed back as
``customer=``, the entitlements are read from that view (its budgets' values are still read
then, under the decision's keys). A budget value read with its meter (the memo's) saves the
meter's read of a reservation."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any, Protocol

from allotment.domain.enforcement import Budget, CustomerEntitlements, Entitled
from allotment.services.catalog import CatalogService
from allotment.services.catalog_subscriptions import (
    EntitledItem,
    SubscriptionService,
    SubscriptionView,
)
from allotment.services.customers import CustomerService


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


class PeriodUsage(Protocol):
    def current_period(self, customer_ref: str, meter_ref: str) -> Any: ...


class Identified(tuple[str, str]):
    """``(id, reference)`` of a customer, and the active subscription's view (``None``: none)
    it was resolved from, as :meth:`SubscriptionService.current` answered it then."""

    view: SubscriptionView | None

    def __new__(cls, customer_id: str, reference: str, view: SubscriptionView | None) -> Identified:
        self = super().__new__(cls, (customer_id, reference))
        self.view = view
        return self


def _view_of(customer: tuple[str, str] | None) -> tuple[SubscriptionView | None] | None:
    return (customer.view,) if isinstance(customer, Identified) else None


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

    def customer_entitlements(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str] | None = None,
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> CustomerEntitlements:
        if features is not None:
            found = self._subscriptions.entitlements_of(
                customer_ref, features, memo_only=False, view=_view_of(customer)
            )
            assert found is not None  # 404 unknown, 412 deleted
            return self._answer(customer_ref, found[1], customer, reserving, found[0])
        items = self._subscriptions.entitlements(customer_ref)  # 404 unknown, 412 deleted
        return self._answer(customer_ref, items, customer, reserving)

    def cached_customer_entitlements(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str] | None = None,
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> CustomerEntitlements | None:
        """:meth:`customer_entitlements` from cached and one-row reads only; ``None`` when
        a budget's value would have to be computed (its memo is stale, or no budget
        entitlement stands behind it: the period's meter total)."""
        plan: str | None = None
        if features is not None:
            found = self._subscriptions.entitlements_of(
                customer_ref, features, memo_only=True, view=_view_of(customer)
            )
            plan, items = (None, None) if found is None else found
        else:
            items = self._subscriptions.cached_entitlements(customer_ref)
            plan = items[0].plan_reference if items else None
        if items is None or any(
            i.feature.is_budget and i.feature.meter_reference is not None and i.budget is None
            for i in items
        ):
            return None
        return self._answer(customer_ref, items, customer, reserving, plan)

    def _answer(
        self,
        customer_ref: str,
        items: Sequence[EntitledItem],
        customer: tuple[str, str] | None,
        reserving: Collection[str],
        plan: str | None = None,
    ) -> CustomerEntitlements:
        """``plan``: the customer's plan when ``items`` may leave features out (else the
        items' plan)."""
        customer_id, reference = customer or self.identify(customer_ref)
        if plan is None and items:
            plan = items[0].plan_reference
        values = {
            item.feature.reference: self._entitled(
                customer_ref, item, item.feature.reference in reserving
            )
            for item in items
        }
        return CustomerEntitlements(customer_id, reference, plan, values)

    def identify(self, customer_ref: str) -> Identified:
        # the subscription's view is cached while the catalog version stands (a deletion or a
        # key change bumps it); a customer without a subscription costs a read
        view = self._subscriptions.current(customer_ref)
        c = view.customer if view is not None else self._customers.get_live(customer_ref)
        return Identified(c.id, c.key or customer_ref, view)

    def _entitled(self, customer_ref: str, item: EntitledItem, reserving: bool) -> Entitled:
        """``reserving``: the meter's event type and value path are read (a commit writes
        usage events of that meter); otherwise they are left empty."""
        v, f = item.effective.value, item.feature
        budget = None
        if f.is_budget and f.meter_reference is not None:
            event_type, value_property = "", None
            if reserving and item.budget is not None and item.budget.event_type:
                event_type, value_property = item.budget.event_type, item.budget.value_property
            elif reserving:
                meter = self._meters.get(f.meter_reference)
                event_type, value_property = meter.event_type, meter.value_property
            if item.budget is not None:
                usage = item.budget.usage
                balance = item.budget.remaining
            else:  # no budget entitlement behind the value: the period's meter total
                usage = Decimal(self._usage.current_period(customer_ref, f.meter_reference).value)
                balance = (v.number or Decimal(0)) - usage
            budget = Budget(balance, usage, False, event_type, value_property)
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
