"""Customer-owned entitlements: what the catalog (plans, subscriptions, overrides) calls to
give a customer its entitlements, and the guard that keeps customers and their entitlements
consistent. The entitlement engine itself is ``EntitlementService`` with a customer
:class:`~allotment.domain.owners.Owner`; nothing here duplicates it.

* :meth:`CustomerEntitlements.put_metered` — create, or change in place, the customer's
  metered entitlement for a feature: usage period + anchor, the allowance issued each period,
  soft limit. A change of allowance (or soft limit) keeps the entitlement, its usage and its
  grants (top-ups): the allowance grant in force is voided at the start of the current usage
  period and the new allowance is issued from that start, so the new allowance applies to the
  whole current period (remaining = new allowance + unexpired top-ups − period usage), earlier
  periods keep the allowance they had, and the anchor does not move. A change of usage period
  or anchor replaces the entitlement (the old one is deleted with its grants).
* :meth:`CustomerEntitlements.put_static` / :meth:`put_boolean` — create, or change in place
  (static ``config``), a static or boolean entitlement; a change of type replaces it.
* :meth:`CustomerEntitlements.remove` — delete the customer's entitlement for a feature.

Each has a ``*_in(tx, …)`` twin that writes inside the caller's transaction: the catalog
changes a subscription and its entitlements in ONE transaction (nothing half-done).

As a :class:`~allotment.services.customers.CustomerGuard` it refuses to delete a customer
that still has active entitlements (409, as OpenMeter) and bumps a customer's value-cache
scopes when the subjects whose usage is its own change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from allotment.clock import Clock
from allotment.domain import entitlement_math as em
from allotment.domain.customers import Customer
from allotment.domain.entitlement_inputs import (
    EntitlementCreate,
    EntitlementType,
    GrantCreate,
    UsagePeriodIn,
)
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import Conflict, InvalidInput, NotFound
from allotment.domain.grants import DEFAULT_ISSUE_AFTER_RESET_PRIORITY
from allotment.domain.ids import new_ulid
from allotment.domain.owners import Owner
from allotment.domain.periods import interval_iso, parse_interval
from allotment.domain.timeutil import floor_minute, to_micros
from allotment.services.entitlements import EntitlementService, EntitlementView
from allotment.services.grants import GrantService
from allotment.storage import entitlements_repo, grants_repo, usage_marks
from allotment.storage.database import Database, Tx
from allotment.storage.entitlement_reads import spec_of
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord

ISSUE_ANNOTATION = "issueAfterReset"
"""Annotation of the grant that carries an entitlement's per-period allowance."""


@dataclass(frozen=True, slots=True)
class MeteredTerms:
    interval: str
    """``DAY``/``WEEK``/``MONTH``/``YEAR`` or an ISO-8601 duration (at least one hour)."""
    anchor: datetime
    allowance: Decimal | None
    """Issued at the start of every usage period (None or 0: nothing issued)."""
    is_soft_limit: bool = False
    preserve_overage_at_reset: bool = False
    measure_usage_from: datetime | None = None
    """On create: where usage starts counting (default: the anchor)."""
    allowance_priority: int = DEFAULT_ISSUE_AFTER_RESET_PRIORITY
    metadata: Mapping[str, str] | None = None
    annotations: Mapping[str, Any] | None = None


def _is_allowance(g: GrantRecord) -> bool:
    return bool((g.annotations or {}).get(ISSUE_ANNOTATION)) and g.deleted_at is None


class CustomerEntitlements:
    """Collaborators: the database and clock, ``entitlements`` (the engine's service) and
    ``grants`` (grants created with a v2 entitlement, in its transaction)."""

    def __init__(
        self, db: Database, clock: Clock, entitlements: EntitlementService, grants: GrantService
    ) -> None:
        self._db = db
        self._clock = clock
        self._ents = entitlements
        self._grants = grants

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    # ------------------------------------------------------------ the v2 create

    def create(
        self, customer_id: str, inp: EntitlementCreate, grants: Sequence[GrantCreate] = ()
    ) -> EntitlementView:
        """``POST /api/v2/customers/{c}/entitlements``: the entitlement and the grants it
        carries, in one transaction (a rejected grant leaves nothing written)."""

        def with_grants(tx: Tx, record: EntitlementRecord, now: datetime) -> None:
            for g in grants:
                self._grants.create_in(tx, record, g, now)

        return self._ents.create(Owner.customer(customer_id), inp, then=with_grants)

    # ------------------------------------------------------------ reads of the v1 routes

    def value(self, customer_id: str, feature_key: str, at: datetime | None) -> ValueView:
        """The value of the customer's entitlement for the feature at ``at`` (default now);
        ``hasAccess: false`` when it has none (OpenMeter answers 200, not 404)."""
        try:
            return self._ents.value(Owner.customer(customer_id), feature_key, at)
        except NotFound:
            return ValueView(False)

    def access(self, customer_id: str) -> dict[str, ValueView]:
        """``/access``: feature key → value now, for every entitlement active now."""
        now = self._now()
        owner = Owner.customer(customer_id)
        out: dict[str, ValueView] = {}
        for view in self._ents.list_for_owner(owner, False):
            if view.record.active_at(now):
                out[view.record.feature_key] = self._ents.value(owner, view.record.id, now)
        return out

    # ------------------------------------------------------------ the catalog's calls

    def put_metered(self, customer_id: str, feature_key: str, t: MeteredTerms) -> EntitlementView:
        """:meth:`put_metered_in` in a transaction of its own."""
        now = self._now()
        with self._db.write() as tx:
            record = self.put_metered_in(tx, customer_id, feature_key, t, now)
            view = self._ents.view(tx, record, now)
        self._ents.changed(record.owner, feature_key)
        return view

    def put_metered_in(
        self, tx: Tx, customer_id: str, feature_key: str, t: MeteredTerms, now: datetime
    ) -> EntitlementRecord:
        """Inside the caller's write transaction (the caller tells ``entitlements.changed``
        after its commit)."""
        interval = parse_interval(t.interval, "usagePeriod.interval")
        anchor = floor_minute(t.anchor.astimezone(UTC))
        if t.allowance is not None and t.allowance < 0:
            raise InvalidInput("allowance: must be >= 0", field="allowance")
        owner = Owner.customer(customer_id)
        existing = entitlements_repo.live_for(tx, owner, feature_key)
        if (
            existing is not None
            and existing.type == EntitlementType.METERED
            and existing.usage_period_interval == interval_iso(interval)
            and existing.usage_period_anchor == anchor
        ):
            return self._change_allowance(tx, existing, t, now)
        if existing is not None:
            self._ents.delete_in(tx, existing.id, now)
        allowance = t.allowance if t.allowance else None
        inp = EntitlementCreate(
            EntitlementType.METERED, feature_key, None, dict(t.metadata or {}) or None,
            UsagePeriodIn(interval, anchor), t.measure_usage_from or anchor, t.is_soft_limit,
            allowance, t.allowance_priority if allowance is not None else None,
            t.preserve_overage_at_reset, None,
        )  # fmt: skip
        return self._ents.create_in(tx, owner, inp, now, t.annotations)

    def _change_allowance(
        self, tx: Tx, existing: EntitlementRecord, t: MeteredTerms, now: datetime
    ) -> EntitlementRecord:
        now_us = to_micros(now)
        self._ents.require_live_owner(tx, existing.owner)
        record = entitlements_repo.lock(tx, existing.id, tx.dialect)
        if record is None or record.deleted_at is not None:
            raise NotFound(f"entitlement {existing.id} not found")
        spec = spec_of(record)
        resets = entitlements_repo.resets_of(tx, record.id)
        start = max(em.current_period_start(spec, resets, now), spec.measure_usage_from)
        amount = t.allowance if t.allowance else None
        if amount != record.issue_after_reset:
            for g in grants_repo.of_entitlement(tx, record.id, include_deleted=False):
                if _is_allowance(g) and g.voided_at is None:
                    void_at = max(start, g.effective_at)
                    grants_repo.void(tx, g.id, to_micros(void_at), now_us)
            if amount is not None:
                grants_repo.insert(tx, self._allowance_grant(record, amount, t, start, now))
        updated = EntitlementRecord(**{
            **{f: getattr(record, f) for f in EntitlementRecord.__dataclass_fields__},
            "issue_after_reset": amount,
            "issue_after_reset_priority": t.allowance_priority if amount is not None else None,
            "is_soft_limit": t.is_soft_limit,
            "metadata": dict(t.metadata) if t.metadata else None,
            "annotations": dict(t.annotations) if t.annotations else record.annotations,
            "updated_at": now,
        })  # fmt: skip
        entitlements_repo.update_terms(tx, updated)
        usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
        return updated

    @staticmethod
    def _allowance_grant(
        record: EntitlementRecord, amount: Decimal, t: MeteredTerms, at: datetime, now: datetime
    ) -> GrantRecord:
        return GrantRecord(
            id=new_ulid(to_micros(now) // 1000), entitlement_id=record.id,
            subject_key=record.subject_key, amount=amount, priority=t.allowance_priority,
            effective_at=at, expiration_duration=None, expiration_count=None, expires_at=None,
            max_rollover=amount, min_rollover=amount, recurrence_interval=None,
            recurrence_anchor=None, metadata=None, annotations={ISSUE_ANNOTATION: True},
            created_at=now, updated_at=now,
        )  # fmt: skip

    def put_static(
        self,
        customer_id: str,
        feature_key: str,
        config: str,
        metadata: Mapping[str, str] | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> EntitlementView:
        """``config``: a string holding JSON (as the static entitlement stores it)."""
        return self._own_tx(
            customer_id, feature_key, EntitlementType.STATIC, config, metadata, annotations
        )

    def put_boolean(
        self,
        customer_id: str,
        feature_key: str,
        metadata: Mapping[str, str] | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> EntitlementView:
        return self._own_tx(
            customer_id, feature_key, EntitlementType.BOOLEAN, None, metadata, annotations
        )

    def _own_tx(
        self,
        customer_id: str,
        feature_key: str,
        kind: EntitlementType,
        config: str | None,
        metadata: Mapping[str, str] | None,
        annotations: Mapping[str, Any] | None,
    ) -> EntitlementView:
        now = self._now()
        with self._db.write() as tx:
            record = self.put_plain_in(
                tx, customer_id, feature_key, kind, config, now, metadata, annotations
            )
            view = self._ents.view(tx, record, now)
        self._ents.changed(record.owner, feature_key)
        return view

    def put_plain_in(
        self,
        tx: Tx,
        customer_id: str,
        feature_key: str,
        kind: EntitlementType,
        config: str | None,
        now: datetime,
        metadata: Mapping[str, str] | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> EntitlementRecord:
        """A static (``config``: JSON text) or boolean entitlement, created or changed in
        place, inside the caller's write transaction; a change of type replaces it."""
        owner = Owner.customer(customer_id)
        existing = entitlements_repo.live_for(tx, owner, feature_key)
        if existing is not None and existing.type == kind:
            self._ents.require_live_owner(tx, existing.owner)
            record = entitlements_repo.lock(tx, existing.id, tx.dialect)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"entitlement {existing.id} not found")
            updated = EntitlementRecord(**{
                **{f: getattr(record, f) for f in EntitlementRecord.__dataclass_fields__},
                "config": config,
                "metadata": dict(metadata) if metadata else None,
                "annotations": dict(annotations) if annotations else record.annotations,
                "updated_at": now,
            })  # fmt: skip
            entitlements_repo.update_terms(tx, updated)
            usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
            return updated
        if existing is not None:
            self._ents.delete_in(tx, existing.id, now)
        inp = EntitlementCreate(
            kind, feature_key, None, dict(metadata or {}) or None, None, None, False, None, None,
            False, config,
        )  # fmt: skip
        return self._ents.create_in(tx, owner, inp, now, annotations)

    def remove(self, customer_id: str, feature_key: str) -> bool:
        """Delete the customer's live entitlement for the feature; False when it has none."""
        with self._db.write() as tx:
            removed = self.remove_in(tx, customer_id, feature_key, self._now())
        if removed:
            self._ents.changed(Owner.customer(customer_id), feature_key)
        return removed

    def remove_in(self, tx: Tx, customer_id: str, feature_key: str, now: datetime) -> bool:
        existing = entitlements_repo.live_for(tx, Owner.customer(customer_id), feature_key)
        return existing is not None and self._ents.delete_in(tx, existing.id, now) is not None

    # ------------------------------------------------------------ CustomerGuard

    def before_delete(self, tx: Tx, customer: Customer) -> None:
        now = self._now()
        active = [
            r for r in entitlements_repo.live_of_customer(tx, customer.id) if r.active_at(now)
        ]
        if active:
            raise Conflict(
                f"customer {customer.id} still has active entitlements, please remove them "
                "before deleting the customer",
                field="customerIdOrKey",
                extensions={"conflictingEntityId": active[0].id},
            )

    def subjects_changing(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        self.attribution_changed(tx, customer, subjects)

    def attribution_changed(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        """The value cache reloads every scope of the customer (its subjects are part of it)."""
        scope = Owner.customer(customer.id).scope
        for key in entitlements_repo.feature_keys_of_customer(tx, customer.id):
            usage_marks.bump_scope(tx, scope, key)
