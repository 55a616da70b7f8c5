"""The catalog as enforcement sees it: an
:class:`~allotment.services.enforcement_ports.EntitlementSource`
over customers, their active subscription's effective values and the budgets' state
(catalog.md §4–§5).

One catalog version read per authorize: :meth:`EnforcementCatalog.identify` answers an
:class:`Identified`, which carries the subscription view it was resolved from; handed back as
``customer=``, the entitlements are read from that view (its budgets' values are still read
then, under the decision's keys). A budget value read with its meter (the memo's) saves the
meter's read of a reservation. The answer made of the same items (by identity: the same
cached view, the same memoised budget values) is the answer kept from the last call."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
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
from allotment.storage.decision_checks import Check
from allotment.storage.read_ahead import ReadAhead


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


class PeriodUsage(Protocol):
    def current_period(self, customer_ref: str, meter_ref: str) -> Any: ...


class Identified(tuple[str, str]):
    """``(id, reference)`` of a customer, and the active subscription's view (``None``: none)
    it was resolved from, as :meth:`SubscriptionService.current` answered it then; or, with a
    ``catalog`` version, the view as cached at that version and not yet checked against the
    catalog (:meth:`EnforcementCatalog.identify_cached`)."""

    view: SubscriptionView | None
    catalog: int | None

    def __new__(
        cls,
        customer_id: str,
        reference: str,
        view: SubscriptionView | None,
        catalog: int | None = None,
    ) -> Identified:
        self = super().__new__(cls, (customer_id, reference))
        self.view = view
        self.catalog = catalog
        return self


def _view_of(
    customer: tuple[str, str] | None, *, unchecked: bool = False
) -> tuple[SubscriptionView | None] | None:
    """The view ``customer`` carries (in a 1-tuple); one not yet checked against the catalog
    only when ``unchecked`` (the caller passes its version on)."""
    if not isinstance(customer, Identified) or (customer.catalog is not None and not unchecked):
        return None
    return (customer.view,)


ANSWERS_MAX = 100_000
"""Answers :class:`EnforcementCatalog` keeps (emptied past it)."""


def _same_items(kept: Sequence[EntitledItem], items: Sequence[EntitledItem]) -> bool:
    return len(kept) == len(items) and all(
        a.effective is b.effective
        and a.feature is b.feature
        and a.budget is b.budget
        and a.plan_reference == b.plan_reference
        for a, b in zip(kept, items, strict=True)
    )


@dataclass(frozen=True, slots=True)
class _Unchecked:
    """What an :meth:`EnforcementCatalog.entitlements_unchecked` answer was made of, and it."""

    view: SubscriptionView
    catalog: int | None
    refs: tuple[str, ...]
    memo: object | None
    ents: CustomerEntitlements
    check: Check


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
        self._answers: dict[
            tuple[str, frozenset[str]],
            tuple[tuple[EntitledItem, ...], CustomerEntitlements | None],
        ] = {}
        """The last answer per (customer, reserved features), with the items it was made of:
        the same items (the same cached view's values and the same memoised budget values,
        by identity) make the same answer; the items kept alive here keep their ids unique."""
        self._unchecked: dict[tuple[Any, ...], _Unchecked] = {}
        """:meth:`entitlements_unchecked`'s answers, by what they were made of."""

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
                customer_ref,
                features,
                memo_only=True,
                view=_view_of(customer, unchecked=True),
                catalog=customer.catalog if isinstance(customer, Identified) else None,
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

    def entitlements_ahead(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str],
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> ReadAhead[CustomerEntitlements] | None:
        """:meth:`cached_customer_entitlements` of a ``customer`` from :meth:`identify_cached`
        as ONE read the caller sends where it chooses (PostgreSQL: with the decision's keys):
        the budgets' memo check, joined to the catalog version its view is checked against;
        its row answers, or ``None`` when the view or a memo no longer holds (the caller then
        reads the long way). ``None`` when no memo of this minute could answer."""
        if not isinstance(customer, Identified) or customer.catalog is None:
            return None
        view = customer.view
        if view is None or features is None:
            return None
        read = self._subscriptions.entitlements_ahead(view, features, customer.catalog)
        if read is None:
            return None
        plan = view.plan.reference

        def answer(items: list[EntitledItem]) -> CustomerEntitlements | None:
            if any(i.feature.is_budget and i.feature.meter_reference and i.budget is None
                   for i in items):  # fmt: skip
                return None
            return self._answer(customer_ref, items, customer, reserving, plan)

        return read.then(answer)

    def entitlements_unchecked(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str],
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> tuple[CustomerEntitlements | None, Check | None]:
        """:meth:`cached_customer_entitlements` with the budgets' memo check not run: what
        :meth:`entitlements_ahead`'s read answers when it returns the row it expects, and that
        check (statement, parameters, row) for the caller to run where it chooses before it
        trusts the answer (SQLite's inline decisions: the group writer, in the decision's
        write transaction, :mod:`allotment.storage.decision_checks`). Without such a read,
        :meth:`cached_customer_entitlements` and no check."""
        view = customer.view if isinstance(customer, Identified) else None
        key: tuple[Any, ...] | None = None
        memo = None
        refs: tuple[str, ...] = ()
        if view is not None and features is not None:
            # the same view (by identity) at the same catalog version, the same budgets' memo
            # (by identity, of this minute): the same answer and check as last time
            key = (customer_ref, *customer, frozenset(reserving), frozenset(features))
            kept = self._unchecked.get(key)
            if kept is not None and kept.view is view:
                refs = kept.refs  # the view's budgets, as found for it last time
            else:
                refs = self._subscriptions.budget_refs(view, features)
            memo = self._subscriptions.budgets_memo(view, refs)  # before: a refresh misses
            if kept is not None and kept.view is view and kept.memo is memo:
                if isinstance(customer, Identified) and kept.catalog == customer.catalog:
                    return kept.ents, kept.check
        read = self.entitlements_ahead(
            customer_ref, customer=customer, reserving=reserving, features=features
        )
        ents = None if read is None else read.optimistic()
        if read is None or ents is None or read.expects is None:
            found = self.cached_customer_entitlements(
                customer_ref, customer=customer, reserving=reserving, features=features
            )
            return found, None
        check = (read.sql, read.params, read.expects)
        if key is not None and view is not None and isinstance(customer, Identified):
            if len(self._unchecked) > ANSWERS_MAX:
                self._unchecked.clear()
            self._unchecked[key] = _Unchecked(view, customer.catalog, refs, memo, ents, check)
        return ents, check

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
        key = (customer_ref, frozenset(reserving))
        kept = self._answers.get(key)
        if (
            kept is not None
            and kept[1] is not None
            and kept[1].customer_id == customer_id
            and kept[1].customer_reference == reference
            and kept[1].pricing_plan_reference == plan
            and _same_items(kept[0], items)
        ):
            return kept[1]
        values = {
            item.feature.reference: self._entitled(
                customer_ref, item, item.feature.reference in reserving
            )
            for item in items
        }
        answer = CustomerEntitlements(customer_id, reference, plan, values)
        if len(self._answers) > ANSWERS_MAX:
            self._answers.clear()
        # kept only when made of the items alone (no period total read, no meter looked up)
        keep = all(
            not i.feature.is_budget
            or i.feature.meter_reference is None
            or (
                i.budget is not None
                and (i.budget.event_type or i.feature.reference not in reserving)
            )
            for i in items
        )
        self._answers[key] = (tuple(items), answer if keep else None)
        return answer

    def identify_cached(self, customer_ref: str) -> Identified | None:
        """:meth:`identify` from the subscriptions' cache alone, unchecked (no read): its
        ``catalog`` version is checked by :meth:`cached_customer_entitlements` in the
        budgets' read (``None`` from there when the catalog has changed); ``None`` when
        not cached or without an active subscription."""
        cached = self._subscriptions.cached_current(customer_ref)
        if cached is None or cached[1] is None:
            return None
        c = cached[1].customer
        return Identified(c.id, c.key or customer_ref, cached[1], cached[0])

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
