"""Grants: create on a metered entitlement, list (per entitlement and globally), void.

Create and void take the entitlement's lock inside the write transaction and validate
against the state read under it (current usage period, grant count), so concurrent writers
cannot both slip past a check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from allotment.domain import entitlement_math as em
from allotment.domain import limits
from allotment.domain.entitlement_inputs import EntitlementType, GrantCreate, Paging
from allotment.domain.errors import InvalidInput, LimitExceeded, NotFound
from allotment.domain.ids import new_ulid
from allotment.domain.periods import expiration_expires_at, interval_iso
from allotment.domain.timeutil import floor_minute, to_micros
from allotment.services.entitlements import field_named, spec_of
from allotment.storage import entitlements_repo, features_repo, grants_repo, usage_marks
from allotment.storage.grants_repo import GrantRecord

if TYPE_CHECKING:
    from allotment.container import Container
    from allotment.services.entitlements import EntitlementService, OwnerRef


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
    def __init__(self, container: Container) -> None:
        self._c = container
        self.max_grants = grants_limit()

    @property
    def _ents(self) -> EntitlementService:
        return self._c.entitlements

    def _now(self) -> datetime:
        return self._c.clock.now().astimezone(UTC)

    def create(self, owner_ref: OwnerRef, id_or_feature_key: str, inp: GrantCreate) -> GrantRecord:
        now = self._now()
        with self._c.db.write() as tx:
            found = self._ents.resolve(tx, owner_ref, id_or_feature_key, now)
            record = entitlements_repo.lock(tx, found.id, self._c.db.dialect)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"entitlement {id_or_feature_key!r} not found")
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
            spec = spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            with field_named():
                effective_at = em.validate_grant_effective_at(spec, resets, inp.effective_at, now)
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
                effective_at=effective_at, expiration_duration=inp.expiration_unit.value,
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
        with self._c.db.read() as tx:
            record = self._ents.resolve(tx, owner_ref, id_or_feature_key, now)
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
        with self._c.db.read() as tx:
            feature_ids = features_repo.ids_for(tx, features) if features else None
            keys = sorted({self._ents.subject_key(tx, s) for s in subjects} | set(subjects))
            return grants_repo.list_all(
                tx, feature_ids=feature_ids, subject_keys=keys, include_deleted=include_deleted,
                order_by=paging.order_by, descending=paging.descending, limit=paging.limit,
                offset=paging.offset, customer_ids=customer_ids,
            )  # fmt: skip

    def void(self, grant_id: str, at: datetime | None) -> None:
        now = self._now()
        with self._c.db.write() as tx:
            grant = grants_repo.by_id(tx, grant_id)
            if grant is None:
                raise NotFound(f"grant {grant_id!r} not found")
            record = entitlements_repo.lock(tx, grant.entitlement_id, self._c.db.dialect)
            grant = grants_repo.by_id(tx, grant_id)  # re-read under the lock
            if record is None or grant is None:
                raise NotFound(f"grant {grant_id!r} not found")
            if grant.deleted_at is not None:
                raise InvalidInput(f"grant {grant_id} is deleted (its entitlement was deleted)")
            spec = spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            with field_named():
                void_at = em.validate_void(grant.to_domain(), at, now, spec, resets)
            grants_repo.void(tx, grant.id, to_micros(void_at), to_micros(now))
            usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
