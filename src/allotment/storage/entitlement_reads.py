"""Reads that several entitlement services share: which entitlement a request's path names,
and everything the engine needs about one metered entitlement.

``EntitlementService``, ``GrantService`` and the value cache all call these inside their own
transactions; keeping them here (below the services) is what lets those services not know
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from allotment.domain import entitlement_math as em
from allotment.domain.engine import Aggregation
from allotment.domain.entitlement_inputs import EntitlementType
from allotment.domain.errors import InvalidInput, NotFound
from allotment.domain.features import Feature
from allotment.domain.grants import DEFAULT_ISSUE_AFTER_RESET_PRIORITY
from allotment.domain.ids import is_ulid
from allotment.domain.owners import Owner
from allotment.domain.periods import Recurrence, parse_interval
from allotment.storage import customers_repo, entitlements_repo, features_repo, grants_repo
from allotment.storage.database import Tx
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord


@dataclass(frozen=True, slots=True)
class MeteredContext:
    """Everything the engine needs about one metered entitlement, loaded in one read."""

    record: EntitlementRecord
    spec: em.MeteredSpec
    resets: list[em.ManualReset]
    grants: list[GrantRecord]
    feature: Feature
    subjects: tuple[str, ...]
    """Whose usage counts (a subject's own key; a customer's key and subject keys)."""


OwnerRef = str | Owner
"""A subject route's ``subjectIdOrKey``, or an owner (``domain/owners.py``)."""


def spec_of(
    record: EntitlementRecord, aggregation: Aggregation = Aggregation.SUM
) -> em.MeteredSpec:
    """The engine's view of a stored metered entitlement (InvalidInput when not metered)."""
    if (
        record.usage_period_interval is None
        or record.usage_period_anchor is None
        or record.measure_usage_from is None
    ):
        raise InvalidInput(f"entitlement {record.id} is not metered")
    return em.MeteredSpec(
        usage_period=Recurrence(
            parse_interval(record.usage_period_interval), record.usage_period_anchor
        ),
        measure_usage_from=record.measure_usage_from,
        is_soft_limit=record.is_soft_limit,
        preserve_overage_at_reset=record.preserve_overage_at_reset,
        issue_after_reset=record.issue_after_reset,
        issue_after_reset_priority=(
            record.issue_after_reset_priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY
        ),
        aggregation=aggregation,
    )


def subject_key(tx: Tx, subject_id_or_key: str) -> str:
    """``subjectIdOrKey``: the key of the live subject with that ULID, else the text itself."""
    if is_ulid(subject_id_or_key):
        key = entitlements_repo.subject_key_of_id(tx, subject_id_or_key)
        if key is not None:
            return key
    return subject_id_or_key


def owner_of(tx: Tx, ref: OwnerRef) -> Owner:
    """A subject route's ``subjectIdOrKey`` as its owner; an owner as it is."""
    return ref if isinstance(ref, Owner) else Owner.subject(subject_key(tx, ref))


def resolve(tx: Tx, owner_ref: OwnerRef, id_or_feature_key: str, at: datetime) -> EntitlementRecord:
    """§1.5: a ULID is looked up as an entitlement id (of this owner); otherwise (or when
    not found) the owner's entitlement for that feature key active at ``at``."""
    owner = owner_of(tx, owner_ref)
    if is_ulid(id_or_feature_key):
        found = entitlements_repo.by_id(tx, id_or_feature_key)
        if found is not None and found.owner == owner:
            return found
    found = entitlements_repo.active_for_feature_key_at(tx, owner, id_or_feature_key, at)
    if found is None:
        raise NotFound(f"entitlement {id_or_feature_key!r} not found for {owner.describe()}")
    return found


def usage_subjects(tx: Tx, record: EntitlementRecord) -> tuple[str, ...]:
    """The event subjects whose usage is the entitlement's, as they are now: a subject
    owner's key; a customer's key and subject keys (``domain/customers.py``)."""
    if not record.customer_id:
        return (record.subject_key,)
    customer = customers_repo.by_id(tx, record.customer_id)
    return () if customer is None else customers_repo.attributed_subjects(tx, customer)


def feature_of(tx: Tx, record: EntitlementRecord) -> Feature:
    feature = features_repo.by_id(tx, record.feature_id)
    if feature is None:  # features are archived, never deleted
        raise NotFound(f"feature {record.feature_id} of entitlement {record.id} not found")
    return feature


def metered_context(tx: Tx, record: EntitlementRecord) -> MeteredContext:
    if record.type != EntitlementType.METERED:
        raise InvalidInput(
            f"entitlement {record.id} is {record.type}; this needs a metered entitlement"
        )
    feature = feature_of(tx, record)
    return MeteredContext(
        record, spec_of(record), entitlements_repo.resets_of(tx, record.id),
        grants_repo.of_entitlement(tx, record.id), feature, usage_subjects(tx, record),
    )  # fmt: skip
