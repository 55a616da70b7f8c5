"""Grants: create on a metered entitlement, list (per entitlement and globally), void.

Create and void take the entitlement's lock inside the write transaction and validate
against the state read under it (current usage period, grant count), so concurrent writers
cannot both slip past a check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from allotment.domain import entitlement_math as em
from allotment.domain import limits
from allotment.domain.entitlement_inputs import EntitlementType, GrantCreate, Paging
from allotment.domain.errors import InvalidInput, LimitExceeded, NotFound, field_named
from allotment.domain.ids import new_ulid
from allotment.domain.owners import Owner
from allotment.domain.periods import expiration_expires_at, interval_iso
from allotment.domain.timeutil import floor_minute, to_micros
from allotment.storage import entitlement_reads as reads
from allotment.storage import entitlements_repo, features_repo, grants_repo, usage_marks
from allotment.storage.database import Tx
from allotment.storage.entitlement_reads import OwnerRef
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.storage.database import Database


GRANTS_LIMIT_ENV = "ALLOTMENT_GRANTS_PER_ENTITLEMENT_MAX"
"""Tests only: lowers ``limits.GRANTS_PER_ENTITLEMENT_MAX`` so the limit can be tested at N and
N + 1 without creating a thousand grants. Read once, when the service is built."""


def grants_limit(env: dict[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(GRANTS_LIMIT_ENV)
    if raw is None or raw == "":
        return limits.GRANTS_PER_ENTITLEMENT_MAX
    value = int(raw)
    if not 1 <= value <= limits.GRANTS_PER_ENTITLEMENT_MAX:
        raise InvalidInput(
            f"{GRANTS_LIMIT_ENV} must be between 1 and {limits.GRANTS_PER_ENTITLEMENT_MAX}"
        )
    return value


class GrantService:
    """Collaborators: the database and clock (the entitlement a grant belongs to is resolved
    by ``storage.entitlement_reads``, shared with ``EntitlementService``)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.max_grants = grants_limit()
        self.on_scope_change: Callable[[Owner, str], None] | None = None
        """Told (owner, feature key) after a grant write commits (notifications); the
        callers of :meth:`create_in` tell it themselves once their transaction commits."""

    def changed(self, owner: Owner, feature_key: str) -> None:
        if self.on_scope_change is not None:
            self.on_scope_change(owner, feature_key)

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def create(self, owner_ref: OwnerRef, id_or_feature_key: str, inp: GrantCreate) -> GrantRecord:
        now = self._now()
        with self._db.write() as tx:
            found = reads.resolve(tx, owner_ref, id_or_feature_key, now)
            record = entitlements_repo.lock(tx, found.id, self._db.dialect)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"entitlement {id_or_feature_key!r} not found")
            grant = self.create_in(tx, record, inp, now)
        self.changed(record.owner, record.feature_key)
        return grant

    def create_in(
        self, tx: Tx, record: EntitlementRecord, inp: GrantCreate, now: datetime
    ) -> GrantRecord:
        """Validate and insert a grant of ``record`` (read under its lock, or just inserted)
        inside the caller's write transaction."""
        if record.type != EntitlementType.METERED:
            raise InvalidInput(
                f"entitlement {record.id} is {record.type}; grants are only supported "
                "for metered entitlements"
            )
        if grants_repo.count_live(tx, record.id) >= self.max_grants:
            raise LimitExceeded(
                f"entitlement {record.id} already has {self.max_grants} grants, the most "
                "allowed (GRANTS_PER_ENTITLEMENT_MAX)"
            )
        spec = reads.spec_of(record)
        resets = entitlements_repo.resets_of(tx, record.id)
        with field_named():
            effective_at = em.validate_grant_effective_at(spec, resets, inp.effective_at, now)
        expires_at = None
        if inp.expiration_unit is not None and inp.expiration_count is not None:
            expires_at = expiration_expires_at(
                effective_at, inp.expiration_unit, inp.expiration_count
            )
        recurrence_interval = recurrence_anchor = None
        if inp.recurrence is not None:
            recurrence_interval = interval_iso(inp.recurrence.interval)
            recurrence_anchor = floor_minute(
                (inp.recurrence.anchor or effective_at).astimezone(UTC)
            )
        grant = GrantRecord(
            id=new_ulid(to_micros(now) // 1000), entitlement_id=record.id,
            subject_key=record.subject_key, amount=inp.amount, priority=inp.priority,
            effective_at=effective_at,
            expiration_duration=inp.expiration_unit.value if inp.expiration_unit else None,
            expiration_count=inp.expiration_count, expires_at=expires_at,
            max_rollover=inp.max_rollover, min_rollover=inp.min_rollover,
            recurrence_interval=recurrence_interval, recurrence_anchor=recurrence_anchor,
            metadata=inp.metadata, annotations=None, created_at=now, updated_at=now,
        )  # fmt: skip
        grant.to_domain()  # the engine's invariants hold before anything is written
        grants_repo.insert(tx, grant)
        usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
        return grant

    def list_for_entitlement(
        self, owner_ref: OwnerRef, id_or_feature_key: str, include_deleted: bool
    ) -> list[GrantRecord]:
        now = self._now()
        with self._db.read() as tx:
            record = reads.resolve(tx, owner_ref, id_or_feature_key, now)
            return grants_repo.of_entitlement(tx, record.id, include_deleted)

    def list_all(
        self,
        features: Sequence[str],
        subjects: Sequence[str],
        include_deleted: bool,
        paging: Paging,
        customer_ids: Sequence[str] | None = None,
    ) -> tuple[list[GrantRecord], int]:
        """``customer_ids`` None: grants of subject-owned entitlements (``subjects`` filters
        them); else of customer-owned ones of these customers (any customer's when empty)."""
        with self._db.read() as tx:
            feature_ids = features_repo.ids_for(tx, features) if features else None
            keys = sorted({reads.subject_key(tx, s) for s in subjects} | set(subjects))
            return grants_repo.list_all(
                tx, feature_ids=feature_ids, subject_keys=keys, include_deleted=include_deleted,
                order_by=paging.order_by, descending=paging.descending, limit=paging.limit,
                offset=paging.offset, customer_ids=customer_ids,
            )  # fmt: skip

    def void(self, grant_id: str, at: datetime | None) -> None:
        now = self._now()
        with self._db.write() as tx:
            grant = grants_repo.by_id(tx, grant_id)
            if grant is None:
                raise NotFound(f"grant {grant_id!r} not found")
            record = entitlements_repo.lock(tx, grant.entitlement_id, self._db.dialect)
            grant = grants_repo.by_id(tx, grant_id)  # re-read under the lock
            if record is None or grant is None:
                raise NotFound(f"grant {grant_id!r} not found")
            if grant.deleted_at is not None:
                raise InvalidInput(f"grant {grant_id} is deleted (its entitlement was deleted)")
            spec = reads.spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            with field_named():
                void_at = em.validate_void(grant.to_domain(), at, now, spec, resets)
            grants_repo.void(tx, grant.id, to_micros(void_at), to_micros(now))
            usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
        self.changed(record.owner, record.feature_key)
