"""Subscriptions of customers to plan versions, overrides, and the one entitlements call
(catalog.md §4–§5).

* One active subscription per customer (409 otherwise; a unique index backs it up).
* ``PATCH`` sets or removes per-customer overrides (``"override": true/false``; true when
  omitted) and/or moves the subscription to another plan or version from now on. Overrides
  survive a plan change; ``start_at`` (the budgets' anchor) never moves.
* ``DELETE`` cancels now.

In the transaction of every write the customer's OpenMeter entitlements are brought in line
with the subscription's effective values by the :class:`EntitlementSync` port (budgets are
metered entitlements, the other values static or boolean ones): a failure anywhere leaves the
subscription and its entitlements as they were.

The one call (:meth:`SubscriptionService.entitlements`) reads the effective values from an
in-memory cache that is valid while the catalog version (bumped by every catalog write) is
unchanged, and each budget's usage from the entitlement value (itself cached): no scan of
events on the hot path.

About 500 lines on purpose: the writes and the one call share the cache and its version, and
splitting them would split the rule of when the cache is valid across two files.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain.catalog import (
    VALUE_KEYS,
    CatalogInvalid,
    TypedFeature,
    TypedValue,
    entitlement_items,
    validate_reference,
)
from allotment.domain.catalog_plans import (
    ACTIVE,
    CANCELED,
    Effective,
    Plan,
    PlanArchived,
    Subscription,
    SubscriptionCanceled,
    SubscriptionExists,
    SubscriptionNotFound,
    UnknownPlan,
    effective_values,
)
from allotment.domain.customers import Customer
from allotment.domain.errors import Conflict, InvalidInput
from allotment.domain.ids import is_ulid, new_ulid
from allotment.domain.limits import QUERY_INT_MAX
from allotment.domain.timeutil import floor_minute, parse_rfc3339, to_micros
from allotment.services.catalog import CatalogService
from allotment.services.customers import CustomerService
from allotment.storage import catalog_repo
from allotment.storage.database import Database, DuplicateKey, Tx
from allotment.storage.read_ahead import ReadAhead

CACHE_MAX = 100_000
"""Customers whose answer the one call keeps in memory (the cache is emptied past it)."""
_PATCH_FIELDS = frozenset(("entitlements", "pricing_plan_reference", "pricing_plan_version"))
_CREATE_FIELDS = frozenset(
    ("customer_reference", "pricing_plan_reference", "pricing_plan_version", "start_at")
)
_OVERRIDE_KEYS = frozenset(("feature_reference", "override", *VALUE_KEYS.values()))


@dataclass(frozen=True, slots=True)
class BudgetValue:
    usage: Decimal
    remaining: Decimal
    has_access: bool
    period_from: datetime | None
    period_to: datetime | None
    event_type: str = ""
    """The budget's meter (its event type and value path), when the value was read with it."""
    value_property: str | None = None


@dataclass(frozen=True, slots=True)
class EntitledItem:
    effective: Effective
    feature: TypedFeature
    budget: BudgetValue | None
    plan_reference: str


class EntitlementSync(Protocol):
    """Keeps a customer's OpenMeter entitlements in line with its effective values, and
    reads a budget's value back."""

    def budget_values(
        self,
        customer_id: str,
        subjects: Sequence[str],
        budgets: Sequence[tuple[TypedFeature, datetime]],
        *,
        memo_only: bool = False,
        catalog: int | None = None,
    ) -> list[BudgetValue | None] | None:
        """``memo_only``: ``None`` unless memoised values answer (nothing computed);
        ``catalog`` (with ``memo_only``): ``None`` too unless the catalog version is this
        one, checked in the same read."""
        ...

    def budget_values_ahead(
        self,
        customer_id: str,
        subjects: Sequence[str],
        budgets: Sequence[tuple[TypedFeature, datetime]],
        catalog: int,
    ) -> ReadAhead[list[BudgetValue | None]] | None:
        """:meth:`budget_values` (``memo_only``, ``catalog``) as one read sent ahead by the
        caller, ``None`` when it cannot be one."""
        ...

    def memo_of(
        self, customer_id: str, subjects: Sequence[str], budget_refs: tuple[str, ...]
    ) -> object | None:
        """A token of the memo :meth:`budget_values_ahead` would answer from now."""
        ...

    def sync(
        self,
        tx: Tx,
        customer_id: str,
        values: Sequence[Effective],
        features: Mapping[str, TypedFeature],
        anchor: datetime,
        now: datetime,
    ) -> list[str]:
        """In the subscription's write transaction; returns the feature keys written."""
        ...

    def end(self, tx: Tx, customer_id: str, feature_keys: Sequence[str], now: datetime) -> None:
        """In the subscription's write transaction."""
        ...

    def committed(self, customer_id: str, feature_keys: Sequence[str]) -> None:
        """After that transaction's commit."""
        ...


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    subscription: Subscription
    customer: Customer
    plan: Plan
    values: tuple[Effective, ...]
    features: Mapping[str, TypedFeature]
    """The live features of ``values`` (archived ones are left out of ``values``)."""
    subjects: tuple[str, ...] = ()
    """The event subjects whose usage is the customer's, when the view was read."""


class SubscriptionService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalog: CatalogService,
        customers: CustomerService,
        sync: EntitlementSync | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._catalog = catalog
        self._customers = customers
        self._sync = sync
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, SubscriptionView | None]] = {}
        customers.add_guard(_ActiveSubscriptionGuard(), first=True)
        customers.set_plan_members(self.customers_on_plan)

    def set_sync(self, sync: EntitlementSync) -> None:
        self._sync = sync

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    # ------------------------------------------------------------ reads

    def _view(
        self, tx: Tx, sub: Subscription, customer: Customer | None = None
    ) -> SubscriptionView:
        if customer is None:
            customer = self._customers.resolve(tx, sub.customer_id, live=False)
        plan = catalog_repo.plan_by_id(tx, sub.plan_id)
        version = catalog_repo.plan_version(tx, sub.plan_id, sub.plan_version)
        assert plan is not None
        assert version is not None
        values = effective_values(version, sub.overrides)
        features = catalog_repo.live_features(tx, [e.value.feature_reference for e in values])
        live = tuple(e for e in values if e.value.feature_reference in features)
        subjects = CustomerService.subjects_in(tx, customer)
        return SubscriptionView(sub, customer, plan, live, features, subjects)

    def get(self, subscription_id: str) -> SubscriptionView:
        with self._db.read() as tx:
            return self._view(tx, self._find(tx, subscription_id))

    @staticmethod
    def _find(tx: Tx, subscription_id: str, *, lock: bool = False) -> Subscription:
        sub = (
            catalog_repo.subscription(tx, subscription_id, lock=lock)
            if is_ulid(subscription_id)
            else None
        )
        if sub is None:
            raise SubscriptionNotFound(f"pricing plan subscription {subscription_id!r} not found")
        return sub

    def list_for(
        self, customer_reference: str | None, cursor: str | None, limit: int
    ) -> list[SubscriptionView]:
        with self._db.read() as tx:
            customer_id = None
            if customer_reference is not None:
                customer_id = self._customers.resolve(tx, customer_reference, live=False).id
            subs = catalog_repo.subscriptions_of(tx, customer_id, cursor, limit)
            return [self._view(tx, s) for s in subs]

    def customers_on_plan(self, plan_reference: str) -> list[str]:
        """Ids of the customers with an active subscription on the plan (the OpenMeter
        customer list's ``planKey`` filter)."""
        with self._db.read() as tx:
            plan = catalog_repo.plan_by_reference(tx, plan_reference)
            return [] if plan is None else catalog_repo.active_customers_of_plan(tx, plan.id)

    def current(self, customer_ref: str) -> SubscriptionView | None:
        """The customer's active subscription (404 unknown, 412 deleted customer), from the
        cache while the catalog version is unchanged: one one-row read on a hit. Every write
        that could change the answer bumps the version in its transaction: catalog writes,
        and (through the guard) a customer's deletion or a change of its key or subjects."""
        version = catalog_repo.current_version(self._db)
        cached = self._cache.get(customer_ref)
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._db.read() as tx:
            version = catalog_repo.version(tx)
            customer = self._customers.resolve(tx, customer_ref)
            sub = catalog_repo.active_subscription(tx, customer.id)
            view = None if sub is None else self._view(tx, sub, customer)
        with self._lock:
            if len(self._cache) > CACHE_MAX:
                self._cache.clear()
            self._cache[customer_ref] = (version, view)
        return view

    def cached_current(self, customer_ref: str) -> tuple[int, SubscriptionView | None] | None:
        """:meth:`current`'s cache entry as it is (the catalog version it was read at, and
        the view), NOT checked against the catalog version: for a caller that checks it
        later itself (``entitlements_of(..., catalog=version)``)."""
        return self._cache.get(customer_ref)

    def entitlements(self, customer_ref: str) -> list[EntitledItem]:
        """The one call: each effective value; budgets with their period's usage."""
        return self.entitled(customer_ref)[1]

    def entitled(self, customer_ref: str) -> tuple[str | None, list[EntitledItem]]:
        """:meth:`entitlements` and the id of the customer they are of (None, with no items,
        when it has no active subscription), for a caller that reads more of the customer
        (the route's held reservations) without resolving the reference again."""
        found = self._entitlements(customer_ref, memo_only=False)
        assert found is not None
        return found

    def cached_entitlements(self, customer_ref: str) -> list[EntitledItem] | None:
        """:meth:`entitlements` when the budgets' values are memoised (``None`` otherwise):
        cached and one-row reads only, nothing computed or folded."""
        found = self._entitlements(customer_ref, memo_only=True)
        return None if found is None else found[1]

    def entitlements_of(
        self,
        customer_ref: str,
        features: Collection[str],
        *,
        memo_only: bool,
        view: tuple[SubscriptionView | None] | None = None,
        catalog: int | None = None,
    ) -> tuple[str | None, list[EntitledItem]] | None:
        """The items of ``features`` only (those of the plan's among them: only their budgets'
        values are read) and the reference of the customer's plan (None without an active
        subscription); with ``memo_only`` as :meth:`cached_entitlements`. ``view``: the
        customer's :meth:`current` answer when the caller has just read it (in a 1-tuple;
        saves the catalog version's read). ``catalog`` (with ``memo_only`` and a view of
        :meth:`cached_current`): the version that view was read at, checked here (``None``
        when the catalog has changed since) in the budgets' read when there is one."""
        found = self.current(customer_ref) if view is None else view[0]
        if found is None:
            return None, []
        items = self._items(found, memo_only, features, catalog)
        return None if items is None else (found.plan.reference, items)

    def _entitlements(
        self, customer_ref: str, *, memo_only: bool
    ) -> tuple[str | None, list[EntitledItem]] | None:
        view = self.current(customer_ref)
        if view is None:
            return None, []
        items = self._items(view, memo_only, None)
        return None if items is None else (view.customer.id, items)

    def entitlements_ahead(
        self, view: SubscriptionView, features: Collection[str], catalog: int
    ) -> ReadAhead[list[EntitledItem]] | None:
        """:meth:`entitlements_of` (``memo_only``, ``view`` of :meth:`cached_current` read at
        version ``catalog``) as ONE read for the caller to send where it chooses: the
        budgets' memo check, or the catalog version when no budget is named; its row answers
        the items, or ``None`` when the catalog or a budget's memo has changed. ``None``
        when no memo of this minute could answer."""
        pairs = self._pairs(view, features)
        budgets = [(f, view.subscription.start_at) for _, f in pairs if f.is_budget]
        read: ReadAhead[list[BudgetValue | None]] | None
        if self._sync is not None and budgets:
            read = self._sync.budget_values_ahead(view.customer.id, view.subjects, budgets, catalog)
        else:
            none: list[BudgetValue | None] = [None] * len(budgets)
            read = ReadAhead(
                catalog_repo.VERSION_STATEMENT,
                (),
                lambda row: none if row[0] == catalog else None,
                (catalog,),
            )
        return None if read is None else read.then(lambda values: _made(view, pairs, values))

    def budget_refs(self, view: SubscriptionView, features: Collection[str]) -> tuple[str, ...]:
        """The references of the budgets among ``features``, in the order
        :meth:`entitlements_ahead` reads them."""
        return tuple(f.reference for _, f in self._pairs(view, features) if f.is_budget)

    def budgets_memo(self, view: SubscriptionView, refs: tuple[str, ...]) -> object | None:
        """The token of the memo :meth:`entitlements_ahead` would check now for the budgets
        ``refs`` (``CatalogEntitlements.memo_of``; ``None`` without budgets or memo)."""
        if self._sync is None or not refs:
            return None
        return self._sync.memo_of(view.customer.id, view.subjects, refs)

    @staticmethod
    def _pairs(
        view: SubscriptionView, only: Collection[str] | None
    ) -> list[tuple[Effective, TypedFeature]]:
        pairs = [(e, view.features[e.value.feature_reference]) for e in view.values]
        if only is not None:
            pairs = [(e, f) for e, f in pairs if e.value.feature_reference in only]
        return pairs

    def _items(
        self,
        view: SubscriptionView,
        memo_only: bool,
        only: Collection[str] | None,
        catalog: int | None = None,
    ) -> list[EntitledItem] | None:
        pairs = self._pairs(view, only)
        budgets = [(f, view.subscription.start_at) for _, f in pairs if f.is_budget]
        if self._sync is not None and budgets:
            read = self._sync.budget_values(
                view.customer.id, view.subjects, budgets, memo_only=memo_only, catalog=catalog
            )
        else:
            if catalog is not None and catalog_repo.current_version(self._db) != catalog:
                return None
            read = [None] * len(budgets)
        return None if read is None else _made(view, pairs, read)

    # ------------------------------------------------------------ writes

    def _plan_version(self, tx: Tx, body: Mapping[str, Any]) -> tuple[Plan, int]:
        ref = validate_reference(body.get("pricing_plan_reference"), "pricing_plan_reference")
        plan = catalog_repo.plan_by_reference(tx, ref)
        if plan is None:
            raise UnknownPlan(f"pricing_plan_reference: pricing plan {ref!r} not found",
                              field="pricing_plan_reference")  # fmt: skip
        raw = body.get("pricing_plan_version")
        if raw is None:
            number = plan.active_version
        else:
            if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= QUERY_INT_MAX:
                raise CatalogInvalid(  # a version past BIGINT was a 500 (issue 12)
                    f"pricing_plan_version: {raw!r} is not a version number (1, 2, ..., "
                    f"{QUERY_INT_MAX})",
                    field="pricing_plan_version",
                )
            number = raw
        if catalog_repo.plan_version(tx, plan.id, number) is None:
            raise UnknownPlan(
                f"pricing_plan_version: pricing plan {ref!r} has no version {number}",
                field="pricing_plan_version",
            )
        if plan.archived_at is not None:
            raise PlanArchived(
                f"pricing_plan_reference: pricing plan {ref!r} is archived (no new subscriptions)",
                field="pricing_plan_reference",
            )
        return plan, number

    def _start_at(self, raw: Any, now: datetime) -> datetime:
        if raw is None:
            return floor_minute(now)
        if not isinstance(raw, str):
            raise CatalogInvalid("start_at: must be an RFC 3339 date-time", field="start_at")
        at = floor_minute(parse_rfc3339(raw, "start_at").astimezone(UTC))
        if at > now:
            raise CatalogInvalid(
                f"start_at: {raw!r} is in the future (scheduled subscriptions are not supported)",
                field="start_at",
            )
        return at

    def create(self, body: Any) -> SubscriptionView:
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object", field="body")
        for key in body:
            if key not in _CREATE_FIELDS:
                raise CatalogInvalid(f"{key}: unknown field", field=str(key))
        ref = body.get("customer_reference")
        if not isinstance(ref, str) or not ref:
            raise CatalogInvalid("customer_reference: required", field="customer_reference")
        now = self._now()
        start = self._start_at(body.get("start_at"), now)
        with self._db.read() as tx:
            self._plan_version(tx, body)  # validate before writing
            self._customers.resolve(tx, ref)
        sub_id = new_ulid(to_micros(now) // 1000)
        try:
            with self._db.write() as tx:
                customer = self._customers.resolve(tx, ref)
                plan, number = self._plan_version(tx, body)
                if catalog_repo.active_subscription(tx, customer.id) is not None:
                    raise self._exists(customer)
                sub = Subscription(sub_id, customer.id, plan.id, number, ACTIVE, start, None)
                catalog_repo.insert_subscription(tx, sub, to_micros(now))
                catalog_repo.bump(tx)
                view = self._view(tx, sub, customer)
                touched = self._apply(tx, view, (), now)
        except DuplicateKey:
            with self._db.read() as tx:
                customer = self._customers.resolve(tx, ref)
                if catalog_repo.active_subscription(tx, customer.id) is not None:
                    raise self._exists(customer) from None
            raise Conflict(  # a concurrent write of one of its entitlements won: nothing stored
                f"customer {customer.key or customer.id!r} changed concurrently; retry",
                field="customer_reference",
            ) from None
        self._committed(customer.id, touched)
        return self.get(sub_id)

    @staticmethod
    def _exists(customer: Customer) -> SubscriptionExists:
        return SubscriptionExists(
            f"customer_reference: customer {customer.key or customer.id!r} already has an "
            "active subscription (cancel it or change its plan)",
            field="customer_reference",
        )

    def _overrides(
        self, current: Mapping[str, TypedValue], body: Mapping[str, Any]
    ) -> dict[str, TypedValue]:
        items = entitlement_items(body)
        out = dict(current)
        setting: list[Mapping[str, Any]] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            flag = item.get("override", True)
            if not isinstance(flag, bool):
                raise CatalogInvalid(
                    f"entitlements[{i}].override: {flag!r} is not a boolean",
                    field=f"entitlements[{i}].override",
                )
            if flag:
                setting.append({k: v for k, v in item.items() if k != "override"})
                positions.append(i)
            else:
                out.pop(str(item["feature_reference"]), None)
        parsed = self._catalog.parse_values(
            setting, allowed_keys=_OVERRIDE_KEYS, positions=positions
        )
        for value in parsed:
            out[value.feature_reference] = value
        return out

    def patch(self, subscription_id: str, body: Any) -> SubscriptionView:
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object", field="body")
        for key in body:
            if key not in _PATCH_FIELDS:
                raise CatalogInvalid(f"{key}: unknown field", field=str(key))
        if "pricing_plan_version" in body and "pricing_plan_reference" not in body:
            raise CatalogInvalid(
                "pricing_plan_reference: required with pricing_plan_version",
                field="pricing_plan_reference",
            )
        with self._db.read() as tx:
            current = self._find(tx, subscription_id)
            if "pricing_plan_reference" in body:
                self._plan_version(tx, body)
        overrides = self._overrides(current.overrides, body)  # validated before the write
        now = self._now()
        with self._db.write() as tx:
            sub = self._find(tx, subscription_id, lock=True)
            if not sub.is_active:
                raise SubscriptionCanceled(
                    f"pricing plan subscription {sub.id} is canceled; create a new one"
                )
            plan_id, number = sub.plan_id, sub.plan_version
            if "pricing_plan_reference" in body:
                plan, number = self._plan_version(tx, body)
                plan_id = plan.id
            changed = replace(sub, plan_id=plan_id, plan_version=number, overrides=overrides)
            catalog_repo.update_subscription(tx, changed, to_micros(now))
            catalog_repo.bump(tx)
            before = self._view(tx, sub)
            view = self._view(tx, changed)
            gone = {e.value.feature_reference for e in before.values} - {
                e.value.feature_reference for e in view.values
            }
            touched = self._apply(tx, view, sorted(gone), now)
        self._committed(sub.customer_id, touched)
        return self.get(subscription_id)

    def cancel(self, subscription_id: str) -> SubscriptionView:
        now = self._now()
        with self._db.write() as tx:
            sub = self._find(tx, subscription_id, lock=True)
            if not sub.is_active:
                raise SubscriptionCanceled(f"pricing plan subscription {sub.id} is canceled")
            done = replace(sub, status=CANCELED, end_at=now)
            catalog_repo.update_subscription(tx, done, to_micros(now))
            catalog_repo.bump(tx)
            view = self._view(tx, done)
            ended = [e.value.feature_reference for e in view.values]
            if self._sync is not None:
                self._sync.end(tx, sub.customer_id, ended, now)
        self._committed(sub.customer_id, ended)
        return view

    def _apply(
        self, tx: Tx, view: SubscriptionView, gone: Sequence[str], now: datetime
    ) -> list[str]:
        """The customer's entitlements brought in line with ``view``, in the subscription's
        transaction ``tx``: the subscription and its entitlements change together or not at
        all. Returns the feature keys touched (for :meth:`_committed`)."""
        if self._sync is None:
            return []
        if gone:
            self._sync.end(tx, view.customer.id, gone, now)
        written = self._sync.sync(
            tx, view.customer.id, view.values, view.features, view.subscription.start_at, now
        )
        return [*gone, *written]

    def _committed(self, customer_id: str, feature_keys: Sequence[str]) -> None:
        if self._sync is not None and feature_keys:
            self._sync.committed(customer_id, feature_keys)


class _ActiveSubscriptionGuard:
    """A customer with an active subscription is not deleted, nor are its subjects changed
    (OpenMeter's rule: 400 "still has active subscriptions")."""

    def before_delete(self, tx: Tx, customer: Customer) -> None:
        catalog_repo.bump(tx)  # the one call's cache knows this customer by reference
        if catalog_repo.active_subscription(tx, customer.id) is not None:
            raise InvalidInput(
                f"customer {customer.key or customer.id!r} still has an active subscription; "
                "cancel it first",
                field="customerIdOrKey",
            )

    def attribution_changed(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        catalog_repo.bump(tx)  # deleted, or its subjects moved: the one call's cache forgets

    def subjects_changing(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        catalog_repo.bump(tx)  # a key change is a change of subjects too
        if catalog_repo.active_subscription(tx, customer.id) is not None:
            raise InvalidInput(
                "cannot change subject keys for customer with active subscriptions",
                field="usageAttribution.subjectKeys",
            )


def _made(
    view: SubscriptionView,
    pairs: Sequence[tuple[Effective, TypedFeature]],
    budget_values: Sequence[BudgetValue | None],
) -> list[EntitledItem]:
    """The items of ``pairs``, the budgets' with their values (in the budgets' order)."""
    values = iter(budget_values)
    return [
        EntitledItem(e, f, next(values) if f.is_budget else None, view.plan.reference)
        for e, f in pairs
    ]
