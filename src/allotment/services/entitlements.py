"""Entitlements: create/override/delete, lists and reset (value and history:
``services/entitlement_values.py``, the base class of :class:`EntitlementService`).

Reads run in one read transaction and never write (a value or history read is a pure
function of the stored rows and the meter's usage). Every write that depends on the
entitlement's state (reset, delete, override, and the grant writes in ``GrantService``)
re-reads the entitlement under its lock inside the write transaction
(``entitlements_repo.lock``).

Owners (``domain/owners.py``): every method taking an owner accepts either the
``subjectIdOrKey`` of the subject routes — the subject key, used verbatim; it need not be a
known subject; the ULID of a live subject (upserted through ``/api/v1/subjects``) resolves to
that subject's key — or an :class:`Owner`. A customer owner (``Owner.customer(id)``) has the
same entitlements, grants, value, history and reset; its usage is the meter's usage over the
customer's key and subject keys as they are at read time (``entitlement_reads.usage_subjects``).

An entitlement a pricing-plan subscription gives (annotated :data:`SUBSCRIPTION_MANAGED`) is
changed by its subscription only: :meth:`EntitlementService.override` and
:meth:`EntitlementService.delete` refuse it with 403, as OpenMeter does ("managed by
subscription"); its value, history, reset and grants (top-ups) stay open to every caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from allotment.domain import entitlement_math as em
from allotment.domain.customers import customer_deleted, customer_not_found
from allotment.domain.entitlement_inputs import (
    EntitlementCreate,
    EntitlementType,
    Paging,
    ResetIn,
)
from allotment.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, field_named
from allotment.domain.features import Feature
from allotment.domain.grants import DEFAULT_ISSUE_AFTER_RESET_PRIORITY
from allotment.domain.ids import new_ulid
from allotment.domain.owners import Owner
from allotment.domain.periods import (
    Period,
    Recurrence,
    interval_iso,
    parse_interval,
    period_at,
)
from allotment.domain.timeutil import floor_minute, to_micros
from allotment.services.entitlement_values import EntitlementValues
from allotment.storage import (
    customers_repo,
    entitlements_repo,
    features_repo,
    grants_repo,
    usage_marks,
)
from allotment.storage import entitlement_reads as reads
from allotment.storage.database import DuplicateKey, Tx
from allotment.storage.entitlement_reads import OwnerRef
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord

SUBSCRIPTION_MANAGED: Mapping[str, str] = {"managedBy": "pricing_plan_subscription"}
"""The annotations of an entitlement a pricing-plan subscription gives (catalog.md §4)."""


def refuse_if_managed(record: EntitlementRecord, what: str) -> None:
    """403 for an override or delete of a subscription's entitlement: the subscription owns
    it (a v2 override or delete would leave the plan's value and the entitlement apart)."""
    annotations = record.annotations or {}
    if annotations.get("managedBy") == SUBSCRIPTION_MANAGED["managedBy"]:
        raise Forbidden(
            f"entitlement {record.id} is managed by subscription: {what} it with "
            "PATCH /v1/pricing-plan-subscriptions/{id} (an override, a plan change or a "
            "cancel); grants, value, history and reset work on it"
        )


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """An entitlement plus what its wire form derives at read time."""

    record: EntitlementRecord
    current_usage_period: Period | None
    last_reset: datetime | None


class EntitlementService(EntitlementValues):
    """The door to entitlements: their lifecycle (create, override, delete, reset) and
    definition reads here; value and history from :class:`EntitlementValues`
    (``services/entitlement_values.py``), whose collaborators it takes."""

    on_scope_change: Callable[[Owner, str], None] | None = None
    """Told (owner, feature key) after an entitlement write commits (notifications)."""

    def changed(self, owner: Owner, feature_key: str) -> None:
        """Tell the listener (notifications) that the scope changed; after the commit."""
        if self.on_scope_change is not None:
            self.on_scope_change(owner, feature_key)

    def _new_id(self) -> str:
        return new_ulid(to_micros(self._clock.now()) // 1000)

    def view(self, tx: Tx, record: EntitlementRecord, now: datetime) -> EntitlementView:
        if record.type == EntitlementType.METERED:
            spec = reads.spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            period = em.timeline(spec, resets).current_usage_period(now)
            return EntitlementView(record, period, em.last_reset(spec, resets))
        if record.usage_period_interval and record.usage_period_anchor:
            rec = Recurrence(parse_interval(record.usage_period_interval),
                             record.usage_period_anchor)  # fmt: skip
            return EntitlementView(record, period_at(rec, now), None)
        return EntitlementView(record, None, None)

    # ------------------------------------------------------------ create / override

    def _feature_for(self, tx: Tx, inp: EntitlementCreate) -> Feature:
        by_id = by_key = None
        if inp.feature_id is not None:
            by_id = features_repo.by_id(tx, inp.feature_id)
            if by_id is None or by_id.archived_at is not None:
                raise NotFound(f"feature {inp.feature_id!r} not found", field="featureId")
        if inp.feature_key is not None:
            by_key = features_repo.live_by_key(tx, inp.feature_key)
            if by_key is None:
                raise NotFound(f"feature {inp.feature_key!r} not found", field="featureKey")
        if by_id is not None and by_key is not None and by_id.id != by_key.id:
            raise InvalidInput(
                "featureId and featureKey name different features", field="featureKey"
            )
        feature = by_id or by_key
        assert feature is not None
        return feature

    def _build(
        self,
        owner: Owner,
        inp: EntitlementCreate,
        feature: Feature,
        now: datetime,
        annotations: Mapping[str, Any] | None = None,
    ) -> tuple[EntitlementRecord, GrantRecord | None]:
        """The new entitlement (and its default grant) — pure, before any write."""
        eid = self._new_id()
        interval = anchor = measure = None
        default: GrantRecord | None = None
        priority = None
        if inp.usage_period is not None:
            interval = interval_iso(inp.usage_period.interval)
            anchor = floor_minute((inp.usage_period.anchor or now).astimezone(UTC))
        if inp.type is EntitlementType.METERED:
            if feature.meter_slug is None:
                raise InvalidInput(
                    f"feature {feature.key!r} has no meter; metered entitlements need one",
                    field="featureKey",
                )
            assert inp.usage_period is not None
            assert anchor is not None
            rec = Recurrence(inp.usage_period.interval, anchor)
            with field_named():
                measure = em.resolve_measure_usage_from(inp.measure_usage_from, rec, now)
            if inp.issue_after_reset is not None:
                priority = inp.issue_after_reset_priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY
            if inp.issue_after_reset is not None and inp.issue_after_reset > 0:
                amount = inp.issue_after_reset
                default = GrantRecord(
                    id=self._new_id(), entitlement_id=eid, subject_key=owner.subject_key,
                    amount=amount,
                    priority=priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY,
                    effective_at=measure, expiration_duration=None, expiration_count=None,
                    expires_at=None, max_rollover=amount, min_rollover=amount,
                    recurrence_interval=None, recurrence_anchor=None, metadata=None,
                    annotations={"issueAfterReset": True}, created_at=now, updated_at=now,
                )  # fmt: skip
        record = EntitlementRecord(
            id=eid, subject_key=owner.subject_key, customer_id=owner.customer_id,
            feature_id=feature.id, feature_key=feature.key,
            type=inp.type.value, metadata=inp.metadata, annotations=annotations,
            config=inp.config,
            usage_period_interval=interval, usage_period_anchor=anchor,
            measure_usage_from=measure, is_soft_limit=inp.is_soft_limit,
            issue_after_reset=inp.issue_after_reset, issue_after_reset_priority=priority,
            preserve_overage_at_reset=inp.preserve_overage_at_reset, active_from=now,
            active_to=None, created_at=now, updated_at=now,
        )  # fmt: skip
        return record, default

    def _insert(self, tx: Tx, record: EntitlementRecord, default: GrantRecord | None) -> None:
        entitlements_repo.insert(tx, record)
        if default is not None:
            grants_repo.insert(tx, default)

    def _raced(self, owner: Owner, feature_key: str) -> Conflict:
        """A concurrent create won the unique index: name it, read in a fresh transaction
        (the failed one is unusable on PostgreSQL)."""
        with self._db.read() as tx:
            return self._conflict(tx, owner, feature_key)

    @staticmethod
    def _conflict(tx: Tx, owner: Owner, feature_key: str) -> Conflict:
        existing = entitlements_repo.live_for(tx, owner, feature_key)
        ext = {"conflictingEntityId": existing.id} if existing is not None else None
        return Conflict(
            f"entitlement with id {existing.id if existing else '?'} already exists for "
            f"feature {feature_key!r} and {owner.describe()}",
            extensions=ext,
        )

    @staticmethod
    def require_live_owner(tx: Tx, owner: Owner) -> None:
        """A customer owner must exist and not be deleted (404 / 412)."""
        if not owner.is_customer:
            return
        customer = customers_repo.by_id(tx, owner.customer_id)
        if customer is None:
            raise customer_not_found(owner.customer_id)
        if customer.is_deleted:
            raise customer_deleted(customer)

    def create(
        self,
        owner_ref: OwnerRef,
        inp: EntitlementCreate,
        annotations: Mapping[str, Any] | None = None,
        then: Callable[[Tx, EntitlementRecord, datetime], object] | None = None,
    ) -> EntitlementView:
        """``then(tx, record, now)`` runs in the same write transaction right after the insert
        (e.g. the grants a v2 create carries); if it raises, nothing is written."""
        now = self._now()
        with self._db.read() as tx:
            owner = reads.owner_of(tx, owner_ref)
            feature = self._feature_for(tx, inp)
        try:
            with self._db.write() as tx:
                record = self.create_in(tx, owner, inp, now, annotations)
                if then is not None:
                    then(tx, record, now)
                created = self.view(tx, record, now)
        except DuplicateKey:
            raise self._raced(owner, feature.key) from None
        self.changed(owner, feature.key)
        return created

    def create_in(
        self,
        tx: Tx,
        owner: Owner,
        inp: EntitlementCreate,
        now: datetime,
        annotations: Mapping[str, Any] | None = None,
    ) -> EntitlementRecord:
        """The create inside the caller's write transaction (a subscription's, so that its
        change and its entitlements commit together); the caller calls :meth:`changed` after
        its commit. A concurrent create of the same one raises ``DuplicateKey``."""
        feature = self._feature_for(tx, inp)
        record, default = self._build(owner, inp, feature, now, annotations)
        self.require_live_owner(tx, owner)
        if entitlements_repo.live_for(tx, owner, feature.key) is not None:
            raise self._conflict(tx, owner, feature.key)
        self._insert(tx, record, default)
        usage_marks.bump_scope(tx, owner.scope, feature.key)
        return record

    def override(
        self, owner_ref: OwnerRef, id_or_feature_key: str, inp: EntitlementCreate
    ) -> EntitlementView:
        now = self._now()
        with self._db.read() as tx:
            old = reads.resolve(tx, owner_ref, id_or_feature_key, now)
            feature = self._feature_for(tx, inp)
        refuse_if_managed(old, "override")
        if old.deleted_at is not None:
            raise InvalidInput(f"entitlement {old.id} is already deleted")
        if not old.active_at(now):
            raise NotFound(f"entitlement {old.id} is not active")
        if feature.id != old.feature_id:
            raise InvalidInput(
                f"the override must be for the same feature ({old.feature_key!r})",
                field="featureKey",
            )
        record, default = self._build(old.owner, inp, feature, now)
        try:
            with self._db.write() as tx:
                self.require_live_owner(tx, old.owner)
                locked = entitlements_repo.lock(tx, old.id, self._db.dialect)
                if locked is None or locked.deleted_at is not None:
                    raise InvalidInput(f"entitlement {old.id} is already deleted")
                now_us = to_micros(now)
                entitlements_repo.soft_delete(tx, old.id, now_us)
                grants_repo.delete_for_entitlement(tx, old.id, now_us)
                self._insert(tx, record, default)
                usage_marks.bump_scope(tx, old.owner.scope, old.feature_key)
                created = self.view(tx, record, now)
        except DuplicateKey:
            raise self._raced(old.owner, old.feature_key) from None
        self.changed(old.owner, old.feature_key)
        return created

    def delete(self, owner_ref: OwnerRef, entitlement_id: str) -> None:
        now = self._now()
        with self._db.write() as tx:
            found = reads.resolve(tx, owner_ref, entitlement_id, now)
            refuse_if_managed(found, "delete")
            if self.delete_in(tx, found.id, now) is None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")

    def delete_in(self, tx: Tx, entitlement_id: str, now: datetime) -> EntitlementRecord | None:
        """Delete (soft) the entitlement and its grants inside the caller's write
        transaction; None when it is gone already."""
        locked = entitlements_repo.lock(tx, entitlement_id, self._db.dialect)
        if locked is None or locked.deleted_at is not None:
            return None
        now_us = to_micros(now)
        entitlements_repo.soft_delete(tx, locked.id, now_us)
        grants_repo.delete_for_entitlement(tx, locked.id, now_us)
        usage_marks.bump_scope(tx, locked.owner.scope, locked.feature_key)
        return locked

    # ------------------------------------------------------------ reads

    def get(self, owner_ref: OwnerRef, entitlement_id: str) -> EntitlementView:
        now = self._now()
        with self._db.read() as tx:
            return self.view(tx, reads.resolve(tx, owner_ref, entitlement_id, now), now)

    def get_by_id(self, entitlement_id: str) -> EntitlementView:
        now = self._now()
        with self._db.read() as tx:
            found = entitlements_repo.by_id(tx, entitlement_id)
            if found is None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")
            return self.view(tx, found, now)

    def list_for_owner(self, owner_ref: OwnerRef, include_deleted: bool) -> list[EntitlementView]:
        now = self._now()
        with self._db.read() as tx:
            owner = reads.owner_of(tx, owner_ref)
            rows = entitlements_repo.list_for_owner(tx, owner, now, include_deleted)
            return [self.view(tx, r, now) for r in rows]

    list_for_subject = list_for_owner

    def resets(self, entitlement_id: str) -> list[em.ManualReset]:
        """The entitlement's persisted resets, oldest first (the console's entitlement page)."""
        with self._db.read() as tx:
            return entitlements_repo.resets_of(tx, entitlement_id)

    def list_all(
        self,
        features: Sequence[str],
        subjects: Sequence[str],
        types: Sequence[str],
        exclude_inactive: bool,
        paging: Paging,
        customer_ids: Sequence[str] | None = None,
    ) -> tuple[list[EntitlementView], int]:
        """``customer_ids`` None: subject-owned entitlements (``subjects`` filters them);
        else customer-owned ones of these customers (any customer's when empty)."""
        now = self._now()
        with self._db.read() as tx:
            feature_ids = features_repo.ids_for(tx, features) if features else None
            keys = sorted({reads.subject_key(tx, s) for s in subjects} | set(subjects))
            rows, total = entitlements_repo.list_all(
                tx, feature_ids=feature_ids, subject_keys=keys, types=types,
                exclude_inactive_at=now if exclude_inactive else None,
                order_by=paging.order_by, descending=paging.descending,
                limit=paging.limit, offset=paging.offset, customer_ids=customer_ids,
            )  # fmt: skip
            return [self.view(tx, r, now) for r in rows], total

    def reset(self, owner_ref: OwnerRef, entitlement_id: str, inp: ResetIn) -> None:
        now = self._now()
        with self._db.write() as tx:
            found = reads.resolve(tx, owner_ref, entitlement_id, now)
            record = entitlements_repo.lock(tx, found.id, self._db.dialect)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")
            if record.type != EntitlementType.METERED:
                raise InvalidInput(f"entitlement {record.id} is {record.type}; only metered "
                                   "entitlements can be reset")  # fmt: skip
            spec = reads.spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            with field_named():
                reset = em.validate_reset(
                    spec, resets, now, inp.effective_at, inp.retain_anchor, inp.preserve_overage
                )
            in_force = em.timeline(spec, resets).input_in_force(reset.at).recurrence
            anchor = in_force.anchor if reset.retain_anchor else reset.at
            entitlements_repo.insert_reset(
                tx, self._new_id(), record.id, reset, anchor, interval_iso(in_force.interval),
                to_micros(now),
            )  # fmt: skip
            usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
        self.changed(record.owner, record.feature_key)
