"""Budgets are entitlements (catalog.md §4): the adapter between a subscription's effective
values and the customer's OpenMeter entitlements (``CustomerEntitlements``).

* A NUMBER budget (a feature with a meter) is a **metered** entitlement of the customer: usage
  period = the feature's ``usage_period``, anchor = the subscription's ``start_at``, its value
  issued as the allowance each period. ``"unlimited"`` is a soft-limit entitlement with no
  allowance (always has access). A changed allowance (override, plan or version change)
  changes the entitlement in place: usage already counted and top-up grants are kept, the new
  allowance applies to the whole current period, the anchor does not move.
* A SWITCH that is on is a **boolean** entitlement; one that is off is none.
* Every other value (plain or rate-limit NUMBER, ENUM, AMOUNT) is a **static** entitlement
  whose ``config`` is the JSON string of the typed value (``{"enums":["gpt-4o-mini"]}``).

Each entitlement is annotated ``{"managedBy": "pricing_plan_subscription"}``.

Reading a customer's budgets (:meth:`CatalogEntitlements.budget_values`) first folds
ingest's unfolded tail (``settle``, as every usage read does: read-your-writes; one cheap
check when there is none), then checks the freshness counters of all of them in ONE
statement (the counters the value cache itself trusts: catalog, the owner's scope per
feature, the summed usage marks of the customer's subjects per meter) and answers from a memo
when they and the minute are unchanged; otherwise each budget's value comes from the
entitlement value (its cache), and the memo is refreshed. Without the fold first, the memo
answered the usage of before an ingest until the writer's background fold ran. A memoised
value also carries its budget's meter (event type and value path), so that a reservation
reads no meter. A memo that answers costs ONE statement: its freshness counters and the
tail's end (``EventService.tail_check``, 0 when nothing waits to be folded) are read together;
with a tail to fold, the long way above. :meth:`CatalogEntitlements.budget_values_ahead`
hands that statement to a caller that runs it where it chooses (PostgreSQL: with the
decision's keys; SQLite's inline decisions: in the group writer's transaction, trusting the
memo's answer first, ``ReadAhead.optimistic``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain.catalog import TypedFeature
from allotment.domain.catalog_plans import Effective
from allotment.domain.entitlement_inputs import EntitlementType
from allotment.domain.errors import NotFound
from allotment.domain.owners import Owner
from allotment.domain.periods import Recurrence, add_clamped, parse_interval, period_at
from allotment.domain.timeutil import ceil_minute
from allotment.services.catalog_subscriptions import BudgetValue
from allotment.services.customer_entitlements import CustomerEntitlements, MeteredTerms
from allotment.services.entitlements import SUBSCRIPTION_MANAGED, EntitlementService
from allotment.storage import catalog_repo, usage_marks
from allotment.storage.database import Database, Tx
from allotment.storage.read_ahead import ReadAhead

ANNOTATIONS = dict(SUBSCRIPTION_MANAGED)


def config_of(data: Mapping[str, object]) -> str:
    return json.dumps(dict(data), separators=(",", ":"))


MEMO_MAX = 100_000
"""Customers whose budget answers are memoised (emptied past it)."""


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


class CatalogEntitlements:
    def __init__(
        self, db: Database, clock: Clock, meters: MeterLookup,
        customer_entitlements: CustomerEntitlements, entitlements: EntitlementService,
        settle: Callable[..., bool] | None = None,
        tail_check: Callable[[], str | None] | None = None,
    ) -> None:  # fmt: skip
        """``settle``: folds ingest's unfolded tail (``EventService.settle``), called before
        the memo's freshness counters are read (``allow_io=False`` only checks: False when a
        fold is needed, for a caller that must not fold). ``tail_check``: the statement
        ``settle`` checks with (``EventService.tail_check``), joined to the memo's own
        check so that a memo that answers costs one statement."""
        self._db = db
        self._settle = settle
        self._tail_check = tail_check
        self._clock = clock
        self._meters = meters
        self._customer = customer_entitlements
        self._ents = entitlements
        self._memo: dict[tuple[str, tuple[str, ...]], _Memo] = {}

    def sync(
        self,
        tx: Tx,
        customer_id: str,
        values: Sequence[Effective],
        features: Mapping[str, TypedFeature],
        anchor: datetime,
        now: datetime,
    ) -> list[str]:
        """Bring the customer's entitlements in line with ``values`` inside the caller's
        write transaction; the feature keys written (for :meth:`committed`)."""
        touched = []
        for e in values:
            f = features[e.value.feature_reference]
            v = e.value
            if f.is_budget:
                period = f.usage_period or "MONTH"
                self._customer.put_metered_in(tx, customer_id, f.reference, MeteredTerms(
                    interval=period, anchor=anchor, allowance=v.number,
                    is_soft_limit=v.unlimited, annotations=ANNOTATIONS,
                ), now)  # fmt: skip
            elif f.type == "SWITCH":
                if v.switch:
                    self._customer.put_plain_in(
                        tx, customer_id, f.reference, EntitlementType.BOOLEAN, None, now,
                        annotations=ANNOTATIONS,
                    )  # fmt: skip
                else:
                    self._customer.remove_in(tx, customer_id, f.reference, now)
            else:
                self._customer.put_plain_in(
                    tx, customer_id, f.reference, EntitlementType.STATIC, config_of(v.data), now,
                    annotations=ANNOTATIONS,
                )  # fmt: skip
            touched.append(f.reference)
        return touched

    def end(self, tx: Tx, customer_id: str, feature_keys: Sequence[str], now: datetime) -> None:
        for key in feature_keys:
            self._customer.remove_in(tx, customer_id, key, now)

    def committed(self, customer_id: str, feature_keys: Sequence[str]) -> None:
        """After the commit of :meth:`sync`/:meth:`end`: tell the notification evaluator."""
        owner = Owner.customer(customer_id)
        for key in feature_keys:
            self._ents.changed(owner, key)

    def budget_values(
        self,
        customer_id: str,
        subjects: Sequence[str],
        budgets: Sequence[tuple[TypedFeature, datetime]],
        *,
        memo_only: bool = False,
        catalog: int | None = None,
    ) -> list[BudgetValue | None] | None:
        """Each budget's value now (``budgets``: feature and anchor), see the module doc.
        ``memo_only``: ``None`` unless the memo answers (version reads only: nothing is
        computed, no usage is read or folded — what an event loop may do). ``catalog``
        (only with ``memo_only``): ``None`` also unless the catalog version
        (``catalog_repo``'s) is this one, read in the same statement."""
        assert catalog is None or memo_only
        if not budgets:
            return []
        minute = ceil_minute(self._clock.now().astimezone(UTC))
        key = (customer_id, tuple(f.reference for f, _ in budgets))
        memo = self._memo.get(key)
        if memo is not None and memo.minute == minute and memo.subjects == tuple(subjects):
            # one statement: the memo's versions, the tail's end (0: nothing to fold, so the
            # versions announce every event stored so far) and the catalog version; anything
            # else: the long way (or None, for a caller whose view awaits this check)
            answer = memo.answer(usage_marks.read_one(self._db, memo.check, memo.statement[1]))
            if answer is not None and catalog in (None, answer[0]):
                return answer[1]
        if catalog is not None:
            return None
        # fold ingest's tail first: the marks below then announce every event stored so far
        # (memo_only folds nothing: a tail to fold means None, the caller's pool path folds)
        if self._settle is not None and not self._settle(allow_io=not memo_only):
            return None
        if memo is not None and memo.minute == minute and memo.subjects == tuple(subjects):
            # the memo's own statement (its scope, features, meters and subjects are the key's)
            if tuple(usage_marks.read_one(self._db, *memo.statement)) == memo.versions:
                return list(memo.values)
        if memo_only:
            return None
        try:
            meters = [self._meters.get(f.meter_reference or "") for f, _ in budgets]
        except NotFound:  # a meter went away: no memo, the values say what they say
            return [self.budget_value(customer_id, f, anchor) for f, anchor in budgets]
        meter_ids = tuple(str(m.id) for m in meters)
        scope = Owner.customer(customer_id).scope
        statement = usage_marks.owner_versions_statement([
            (scope, f.reference, mid, subjects)
            for (f, _), mid in zip(budgets, meter_ids, strict=True)
        ])  # fmt: skip
        versions = tuple(usage_marks.read_one(self._db, *statement))
        # each value carries its meter (a reservation's commit writes usage of it): a meter's
        # event type and value path never change, and a meter write bumps the catalog
        # version the memo checks
        values = [
            _with_meter(self.budget_value(customer_id, f, anchor), m)
            for (f, anchor), m in zip(budgets, meters, strict=True)
        ]
        if len(self._memo) > MEMO_MAX:
            self._memo.clear()
        tail = (self._tail_check() if self._tail_check is not None else None) or "SELECT 0"
        check = (
            f"{statement[0]} CROSS JOIN ({tail}) AS tail_end"
            f" CROSS JOIN ({catalog_repo.VERSION_STATEMENT}) AS catalog_version"
        )
        self._memo[key] = _Memo(
            minute, tuple(subjects), meter_ids, versions, tuple(values), statement, check
        )
        return values

    def budget_values_ahead(
        self,
        customer_id: str,
        subjects: Sequence[str],
        budgets: Sequence[tuple[TypedFeature, datetime]],
        catalog: int,
    ) -> ReadAhead[list[BudgetValue | None]] | None:
        """:meth:`budget_values` with ``memo_only`` and ``catalog``, as a read for the caller
        to send where it chooses (under its keys): the memo's one statement, whose row
        answers the memoised values, or ``None`` when they no longer hold (the long way is
        then the caller's). ``None`` without a memo of this minute to check. It expects the
        row of the memo's versions, no tail and ``catalog`` (:attr:`ReadAhead.expects`)."""
        minute = ceil_minute(self._clock.now().astimezone(UTC))
        memo = self._memo.get((customer_id, tuple(f.reference for f, _ in budgets)))
        if memo is None or memo.minute != minute or memo.subjects != tuple(subjects):
            return None

        def finish(row: Sequence[Any]) -> list[BudgetValue | None] | None:
            answer = memo.answer(row)
            return None if answer is None or answer[0] != catalog else answer[1]

        return ReadAhead(memo.check, memo.statement[1], finish, (*memo.versions, 0, catalog))

    def memo_of(
        self, customer_id: str, subjects: Sequence[str], budget_refs: tuple[str, ...]
    ) -> object | None:
        """The memo :meth:`budget_values_ahead` would answer from now (``budget_refs``: its
        budgets' references in order), as a token compared by identity: another one once it
        was refreshed; ``None`` when none is of this minute."""
        memo = self._memo.get((customer_id, budget_refs))
        if memo is None or memo.subjects != tuple(subjects):
            return None
        return memo if memo.minute == ceil_minute(self._clock.now().astimezone(UTC)) else None

    def budget_value(
        self, customer_id: str, feature: TypedFeature, anchor: datetime
    ) -> BudgetValue | None:
        """The budget's value now; its period's end from the feature's period and the
        subscription's anchor (one interval after the start when a reset moved it)."""
        feature_key = feature.reference
        now = self._clock.now().astimezone(UTC)
        try:
            value = self._ents.value(Owner.customer(customer_id), feature_key, now)
        except NotFound:
            return None
        m = value.metered
        if m is None:
            return None
        start = m.start_of_period
        end = period_end(feature.usage_period or "MONTH", anchor, start)
        return BudgetValue(m.usage, m.balance, value.has_access, start, end)


def _with_meter(value: BudgetValue | None, meter: Any) -> BudgetValue | None:
    if value is None:
        return None
    return replace(value, event_type=meter.event_type, value_property=meter.value_property)


@dataclass(frozen=True, slots=True)
class _Memo:
    """Answers read after ``versions`` were (so they hold at least what those announce)."""

    minute: datetime
    subjects: tuple[str, ...]
    meter_ids: tuple[str, ...]
    versions: tuple[Any, ...]
    values: tuple[BudgetValue | None, ...]
    statement: tuple[str, list[Any]]
    """What reads ``versions`` (``usage_marks.owner_versions_statement``)."""
    check: str
    """``statement``'s SQL with two more columns, the tail's end (0 without a tail check)
    and the catalog version (its parameters are ``statement``'s)."""

    def answer(self, row: Sequence[Any]) -> tuple[Any, list[BudgetValue | None]] | None:
        """The catalog version ``check``'s row was read at and the memoised values, when
        its versions are the memo's and no tail waits to be folded; else ``None``."""
        row = tuple(row)
        if row[-2] or row[:-2] != self.versions:
            return None
        return row[-1], list(self.values)


@functools.lru_cache(maxsize=4096)
def period_end(interval: str, anchor: datetime, start: datetime) -> datetime:
    """The end of the usage period that starts at ``start``: the anchor's next boundary, or
    one interval after ``start`` when a reset moved the period off the anchor."""
    duration = parse_interval(interval)
    p = period_at(Recurrence(duration, anchor), start)
    return p.end if p.start == start else add_clamped(start, duration)
